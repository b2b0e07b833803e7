"""End-to-end builds into tmp folders: format, determinism, resume from a partial build."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from tests.conftest import PARTS, SMALL, dataset_files, shard_tar

MEMBERS_PER_SAMPLE = 2


def _files(folder: Path) -> dict[str, bytes]:
    return dataset_files(folder, manifest=False)


@pytest.fixture(scope="module")
def demo_like(tmp_path_factory):
    """One small build shared by the format tests."""
    from synthfer.build import build
    from synthfer.recipe import load_recipe

    folder = tmp_path_factory.mktemp("build")
    (folder / "recipe.yaml").write_text(SMALL.replace("count: 4", "count: 10"))
    result = build(load_recipe(folder / "recipe.yaml"))
    return folder / "out", result


def test_outputs_present(demo_like):
    out, result = demo_like
    assert result.complete and result.rows == result.planned_samples == 50
    names = sorted(p.name for p in out.iterdir())
    assert names == [".lock", "README.md", "_synthfer", "data", "manifest.parquet", "run.json"]
    assert len(list((out / "data").glob("*.tar"))) == 5
    assert len(list((out / PARTS).glob("*.done.json"))) == 5
    assert not [p for p in out.rglob("*.tmp-*")]  # no temporaries left


def test_manifest_rows_and_members_agree(demo_like):
    out, _ = demo_like
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(table) == 50 and len({r["key"] for r in table}) == 50
    assert all("." not in r["key"] for r in table)
    splits = {}
    for row in table:
        assert splits.setdefault(row["identity"], row["split"]) == row["split"]
        assert row["quality"] is None and row["pred_valence"] is None  # not measured: null, never invented
    by_shard = {}
    for row in table:
        by_shard.setdefault(row["shard"], []).append(row)
    for shard, rows in by_shard.items():
        with tarfile.open(shard_tar(out, shard)) as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
            for row in rows:
                if row["status"] == "accepted":
                    assert names.count(f"{row['key']}.png") == 1 and names.count(f"{row['key']}.json") == 1
                    img = Image.open(io.BytesIO(tar.extractfile(f"{row['key']}.png").read()))
                    img.load()
                    assert img.mode == "RGB" and img.size == (32, 32) == (row["width"], row["height"])
                    label = json.loads(tar.extractfile(f"{row['key']}.json").read())
                    assert label["key"] == row["key"] and label["target_valence"] == row["target_valence"]
                    assert label["quality"] == -1.0 and label["pred_valence"] == -2.0   # sentinels: not measured
            assert len(names) == MEMBERS_PER_SAMPLE * sum(r["status"] == "accepted" for r in rows)


def test_webdataset_reads_the_shards(demo_like):
    out, _ = demo_like
    urls = [str(p) for p in sorted((out / "data").glob("*.tar"))]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb"))
    assert len(samples) == 50
    first = samples[0]
    assert first["__key__"] == "0000000_neutral"
    assert first["png"].shape == (32, 32, 3) and first["json"]["target"] == "neutral"


def test_images_differ_between_targets_and_identities(demo_like):
    out, _ = demo_like
    with tarfile.open(shard_tar(out, 0)) as tar:
        a = np.asarray(Image.open(tar.extractfile("0000000_neutral.png")))
        b = np.asarray(Image.open(tar.extractfile("0000000_happy-100.png")))
        c = np.asarray(Image.open(tar.extractfile("0000001_neutral.png")))
    assert np.abs(a.astype(int) - b).mean() > 1 and np.abs(a.astype(int) - c).mean() > 1


def test_run_json_records_the_resolved_recipe(demo_like):
    out, result = demo_like
    info = json.loads((out / "run.json").read_text())
    assert info["recipe"]["identities"] == {"count": 10, "truncation_psi": 0.7, "truncation_cutoff": None,
                                            "max_count": None}
    assert info["counts"]["manifest_rows"] == 50 and info["counts"]["complete"] is True
    assert len(info["fingerprint"]) == 16 and info["torch_version"]


def test_two_builds_are_byte_identical_and_partial_builds_too(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL.replace("count: 4", "count: 6"))
    whole = cli("build", recipe, "--output", tmp_path / "a", "--quiet")
    assert whole.exit_code == 0, whole.output
    again = cli("build", recipe, "--output", tmp_path / "b", "--quiet")
    assert again.exit_code == 0, again.output
    first = cli("build", recipe, "--output", tmp_path / "c", "--shards", "2,1", "--quiet")
    assert first.exit_code == 0, first.output
    assert sorted(p.name[-10:] for p in (tmp_path / "c" / "data").iterdir()) == ["000001.tar", "000002.tar"]
    assert json.loads((tmp_path / "c" / "run.json").read_text())["counts"]["complete"] is False
    rest = cli("build", recipe, "--output", tmp_path / "c", "--quiet")
    assert rest.exit_code == 0, rest.output
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert len(a) == 3 * 3 and a == b == c
    assert (tmp_path / "a" / "manifest.parquet").read_bytes() == (tmp_path / "c" / "manifest.parquet").read_bytes()
    overrides = json.loads((tmp_path / "a" / "run.json").read_text())["overrides"]
    assert overrides == []


def test_set_override_is_recorded_and_changes_the_plan(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    result = cli("build", recipe, "--output", tmp_path / "o", "--set", "identities.count=3", "--quiet")
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["overrides"] == ["identities.count=3"] and info["counts"]["manifest_rows"] == 15


def test_a_different_recipe_does_not_mix_into_an_output(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    assert cli("build", recipe, "--quiet").exit_code == 0
    result = cli("build", recipe, "--set", "seed=8", "--quiet")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {tmp_path / 'out'}: was built from a different recipe or weights "
                                    f"(recipe.seed: 7 -> 8); use --mode overwrite or another --output")


def test_output_into_a_foreign_folder_is_refused(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    result = cli("build", recipe, "--output", tmp_path / "mine")
    assert result.exit_code == 2 and "not a synthfer output" in result.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_summary_and_progress_lines(cli, write_recipe):
    result = cli("build", write_recipe(SMALL))
    assert result.exit_code == 0, result.output
    assert "committed shard-000001" in result.stderr
    assert "manifest rows" in result.stdout and "images rendered/s" in result.stdout
    assert "accepted per target and split (worst first)" in result.stdout
