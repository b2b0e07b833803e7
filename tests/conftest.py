"""Shared helpers: run the CLI in-process, write recipes into tmp folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synthfer.cli import app

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A build small enough for many tests: 4 identities x 5 targets, 2 identities per shard (train, val).
SMALL = """\
name: small
seed: 7
identities: {count: 4}
targets: {emotions: [happy, sad], intensities: [0.5, 1.0], neutral: true}
output: {dir: out, samples_per_shard: 10, image: {format: png, size: 32}, splits: {train: 0.5, val: 0.5, test: 0.0}}
execution: {device: cpu, batch_size: 4}
"""


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])
    return invoke


@pytest.fixture
def write_recipe(tmp_path):
    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the whole session (tests/s3.py); skipped without moto."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from tests.s3 import moto_s3

    with moto_s3() as endpoint:
        yield endpoint


def dataset_files(out: Path, manifest: bool = True) -> dict[str, bytes]:
    """Every file a build's result consists of (shard tars, parts and markers, the manifest),
    relative name -> bytes: what two builds of one recipe must share byte for byte."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and str(p.relative_to(out)).startswith(("data/", "rejected/", "_synthfer/parts/"))}
    if manifest:
        files["manifest.parquet"] = (out / "manifest.parquet").read_bytes()
    return files


def shard_tar(out: Path, index: int) -> Path:
    """The accepted-samples tar of shard `index` (format 2 names it by split: data/{split}-NNNNNN.tar)."""
    (found,) = sorted((out / "data").glob(f"*-{index:06d}.tar"))
    return found


PARTS = Path("_synthfer") / "parts"


def error_lines(stderr: str) -> list[str]:
    """stderr without the progress notes a build prints before its first batch (`synthfer: ...`):
    what must be exactly one `Error:` line when a build is refused."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("synthfer: ")]
