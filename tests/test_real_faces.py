"""README's "Real faces" path as a new user walks it, with a local HTTP server standing in for
the internet: `models fetch` (resume, pins, hash refusal, licences), `models export-onnx` of
EmoNet and MagFace checkpoints in their public key layouts, then `models check` and a build whose
recipe names everything through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.checkpoint_files import (nvlabs_init_kwargs, random_editor, random_generator, to_nvlabs_state,
                                    write_emostyle_pt, write_nvlabs_pickle)
from tests.http_faults import file_server  # noqa: F401  (pytest fixture)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _fixture_sum(name: str) -> int:
    """Parameters (not BatchNorm statistics) in a key-layout fixture written from the reference."""
    total = 0
    for line in (FIXTURES / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        dims = shape.strip("[]").replace("x", ",")        # "64x3x7x7" or "[64, 3, 7, 7]"; scalars "scalar", "[]"
        total += int(np.prod([int(d) for d in dims.split(",") if d.strip().isdigit()]))
    return total


@pytest.fixture
def checkpoints(tmp_path_factory):
    """The files a user downloads, in their published formats (random weights, small generator)."""
    folder = tmp_path_factory.mktemp("published")
    gen = random_generator(resolution=32)
    write_nvlabs_pickle(folder / "ffhq.pkl", to_nvlabs_state(gen), nvlabs_init_kwargs(gen, 512, 32))
    write_emostyle_pt(folder / "emo_mapping_wplus_2.pt", random_editor(n_latent=gen.n_latent, w_dim=32))
    return folder


def test_fetch_resumes_pins_and_refuses_a_hash_mismatch(cli, file_server, checkpoints, tmp_path):  # noqa: F811
    models = tmp_path / "models"
    ffhq = (checkpoints / "ffhq.pkl").read_bytes()
    file_server.add("/ffhq.pkl", ffhq, drop_after=len(ffhq) // 3, drop_times=1)
    file_server.add("/emo_mapping_wplus_2.pt", (checkpoints / "emo_mapping_wplus_2.pt").read_bytes())
    file_server.add("/enet_b0_8_va_mtl.onnx", b"not the published model" * 100)
    fetch = ["models", "fetch", "--dir", str(models), "--mirror", file_server.base]

    refused = cli(*fetch, "ffhq", "emostyle-editor", "--accept-licence", "ffhq")
    assert refused.exit_code == 2 and not file_server.requests
    assert refused.stderr.strip() == ("Error: emostyle-editor: not for commercial use (no licence stated for the "
                                      "weights (code MIT); trained through StyleGAN2 FFHQ and EmoNet, both "
                                      "non-commercial): read https://github.com/bihamta/emostyle, then fetch it "
                                      "with --accept-licence emostyle-editor")

    result = cli(*fetch, "ffhq", "emostyle-editor", "--accept-licence", "ffhq", "--accept-licence", "emostyle-editor")
    assert result.exit_code == 0, result.output
    assert (models / "ffhq.pkl").read_bytes() == ffhq
    assert file_server.ranges("/ffhq.pkl") == [None, f"bytes={len(ffhq) // 3}-"]    # resumed where it dropped
    assert "ffhq: resumed" in result.stdout and "emostyle-editor: downloaded" in result.stdout
    sums = (models / "SHA256SUMS").read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == ["emo_mapping_wplus_2.pt", "ffhq.pkl"]

    bad = cli(*fetch, "hsemotion-enet_b0_8_va_mtl")     # the registry states the publisher's git blob id
    assert bad.exit_code == 1
    assert "got git blob sha1" in bad.stderr and "where the registry states 7ce9d6dd5b82b260bc19bfe7822a6ffa1abb6011" \
        in bad.stderr and bad.stderr.strip().endswith("deleted the download")
    assert sorted(p.name for p in models.iterdir()) == ["SHA256SUMS", "emo_mapping_wplus_2.pt", "ffhq.pkl"]

    listed = cli("models", "list", "--dir", str(models))
    assert listed.exit_code == 0
    assert [line.split("│")[5].strip() for line in listed.stdout.splitlines() if "│ ffhq " in line] == ["yes, pinned"]


def _emonet_checkpoint(path: Path) -> Path:
    from synthfer.models.emonet import EmoNet

    torch.manual_seed(0)
    torch.save({f"module.{k}": v for k, v in EmoNet(8).state_dict().items()}, path)   # as DataParallel saved it
    return path


def _magface_checkpoint(path: Path) -> Path:
    """MagFace's DDP release layout: backbone under features.module., plus the margin classifier."""
    from synthfer.models.iresnet import iresnet50

    torch.manual_seed(0)
    state = {f"features.module.{k}": v for k, v in iresnet50().state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512)
    torch.save({"epoch": 25, "arch": "iresnet50", "state_dict": state}, path)
    return path


def test_export_onnx_then_a_build_through_the_registry(cli, checkpoints, tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    for name in ("ffhq.pkl", "emo_mapping_wplus_2.pt"):
        (models / name).write_bytes((checkpoints / name).read_bytes())
    monkeypatch.setenv("SYNTHFER_MODELS_DIR", str(models))

    emonet = cli("models", "export-onnx", _emonet_checkpoint(tmp_path / "emonet_8.pth"), models / "emonet_8.onnx")
    assert emonet.exit_code == 0, emonet.output
    assert emonet.stdout.startswith(f"wrote {models / 'emonet_8.onnx'}: emonet, "
                                    f"{_fixture_sum('emonet-keys/emonet_8.txt'):,} parameters, "
                                    f"image [N, 3, 256, 256] -> va [N, 2], onnxruntime vs torch ")
    magface = cli("models", "export-onnx", _magface_checkpoint(tmp_path / "magface.pth"),
                  models / "magface_iresnet50.onnx")
    assert magface.exit_code == 0, magface.output
    assert f"iresnet50, {_fixture_sum('magface-keys/iresnet50.txt'):,} parameters, image [N, 3, 112, 112] -> " \
           f"embedding [N, 512]" in magface.stdout

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("""\
seed: 5
identities: {count: 2}
targets: {emotions: [happy, sad], intensities: [1.0], neutral: true}
models:
  generator: {kind: stylegan2, checkpoint: "registry:ffhq"}
  editor: {kind: emostyle, checkpoint: "registry:emostyle-editor"}
  va: {preset: emonet-8}
  quality: {preset: magface-iresnet50}
output: {dir: out, samples_per_shard: 3, image: {format: png, size: 32}, splits: {train: 1.0, val: 0.0, test: 0.0}}
execution: {device: cpu, batch_size: 4}
""")
    check = cli("models", "check", recipe)
    assert check.exit_code == 0, check.output
    assert "va: preset emonet-8" in check.stdout and "quality: 512-d embedding" in check.stdout
    assert "licence va (onnx): [NON-COMMERCIAL] emonet-8: CC BY-NC-ND 4.0" in check.stdout
    build = cli("build", recipe, "-q")
    assert build.exit_code == 0, build.output
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert len(rows) == 6 and all(np.isfinite(r["quality"]) and -1 <= r["pred_valence"] <= 1 for r in rows)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["recipe"]["models"]["va"]["preprocess"]["rounding"] == "floor"
    assert run["recipe"]["models"]["va"]["path"] == str(models / "emonet_8.onnx")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "license: other" in card and "emonet-8: CC BY-NC-ND 4.0" in card


def test_export_onnx_mistakes_are_one_line(cli, tmp_path):
    torch.save({"a.weight": torch.zeros(2)}, tmp_path / "x.pth")
    result = cli("models", "export-onnx", tmp_path / "x.pth", tmp_path / "x.onnx")
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"Error: {tmp_path / 'x.pth'}: neither an EmoNet nor a MagFace iResNet "
                                     f"checkpoint; --arch emonet, iresnet50 or iresnet100 names what it should be")
    wrong = cli("models", "export-onnx", tmp_path / "x.pth", tmp_path / "x.bin")
    assert wrong.stderr.strip() == f"Error: {tmp_path / 'x.bin'}: the output name must end in .onnx"
    assert not (tmp_path / "x.onnx").exists()
