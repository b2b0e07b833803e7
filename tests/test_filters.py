"""Filters end to end: builds with purpose-built ONNX models whose answers are known."""

from __future__ import annotations

import io
import shutil
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from synthfer.recipe import QualityPreprocess
from synthfer.stages.assess import preprocess
from tests import onnx_models
from tests.conftest import error_lines

BASE = """\
seed: 3
identities: {count: 2}
targets: {emotions: [happy, pleased, glad, sad, calm], intensities: [1.0], neutral: true}
output: {dir: out, samples_per_shard: 100, image: {format: png, size: 64}, splits: {train: 1.0, val: 0.0, test: 0.0}}
execution: {device: cpu, batch_size: 4}
"""


@pytest.fixture
def build(cli, write_recipe, tmp_path):
    """Write ONNX files + a recipe, build it, return {key: row} of the manifest."""
    def run(extra: str, models: dict[str, bytes], expect: int = 0, base: str = BASE):
        for name, data in models.items():
            (tmp_path / name).write_bytes(data)
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        result = cli("build", write_recipe(base + extra), "--quiet")
        assert result.exit_code == expect, result.output
        if expect:
            return result
        rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
        return {r["key"].split("_", 1)[1] + f"@{r['identity']}": r for r in rows}
    return run


VA_ONLY = "models:\n  va: {kind: onnx, path: va.onnx}\n"


def test_va_direction_rule_with_a_model_that_always_says_happy(build):
    rows = build(VA_ONLY + "filters: {max_direction_error_deg: 30}\n", {"va.onnx": onnx_models.constant_va(1.0, 0.0)})
    assert rows["happy-100@0"]["status"] == "accepted"          # 7.8 deg off
    assert rows["pleased-100@0"]["status"] == "accepted"        # 6.8 deg off, across 0
    assert rows["sad-100@0"]["reject_reasons"] == ["va_direction"]
    assert rows["calm-100@0"]["reject_reasons"] == ["va_direction"]   # 43.8 deg off
    assert rows["neutral@0"]["status"] == "accepted"            # neutral: quality only
    r = rows["sad-100@1"]
    assert (r["pred_valence"], r["pred_arousal"], r["pred_angle_deg"]) == (1.0, 0.0, 0.0)
    assert r["direction_error_deg"] == pytest.approx(152.5)
    assert r["distance_error"] == pytest.approx(np.hypot(1 - np.cos(np.radians(207.5)), np.sin(np.radians(207.5))))
    assert r["quality"] is None and r["identity_similarity"] is None   # no quality model: null, not invented


def test_quality_is_the_embedding_norm_and_the_threshold_applies(build, tmp_path):
    rows = build("models:\n  quality: {kind: onnx, path: q.onnx}\nfilters: {min_quality: 10}\n",
                 {"q.onnx": onnx_models.mean_quality(scale=1.0)})
    with tarfile.open(tmp_path / "out" / "data" / "train-000000.tar") as tar:
        for row in rows.values():
            if row["status"] != "accepted":
                continue
            pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(row["key"] + ".png").read())))
            x = preprocess(torch.from_numpy(pixels[None].copy()), QualityPreprocess())
            assert row["quality"] == pytest.approx(float(x.mean()) * np.sqrt(512), rel=1e-5)
    qualities = [r["quality"] for r in rows.values()]
    assert min(qualities) < 10 < max(qualities), qualities   # the threshold actually splits this set
    for row in rows.values():
        assert (row["quality"] < 10) == ("low_quality" in row["reject_reasons"])
        assert (row["identity_similarity"] is None) == row["key"].endswith("neutral")


def test_identity_drift_uses_the_neutral_embedding(build):
    rows = build("models:\n  quality: {kind: builtin}\nfilters: {min_identity_similarity: 0.999}\n", {})
    assert rows["neutral@0"]["identity_similarity"] is None and rows["neutral@0"]["status"] == "accepted"
    sims = [r["identity_similarity"] for r in rows.values() if r["identity_similarity"] is not None]
    assert len(sims) == 10 and all(-1 <= s < 0.999 for s in sims)
    assert all(r["reject_reasons"] == ["identity_drift"] for r in rows.values() if r["identity_similarity"] is not None)


def test_identity_similarity_without_neutral_target(build):
    rows = build("models:\n  quality: {kind: builtin}\n", {})
    rows_no_neutral = build("models:\n  quality: {kind: builtin}\n", {},
                            base=BASE.replace("neutral: true", "neutral: false"))
    assert not any(k.startswith("neutral") for k in rows_no_neutral)
    # the neutral reference is rendered and measured anyway, so the similarities are the same
    for key, row in rows_no_neutral.items():
        assert row["identity_similarity"] == pytest.approx(rows[key]["identity_similarity"], abs=1e-6)


def test_band_wraps_through_zero_and_reject_always_rejects(build):
    rows = build(VA_ONLY + "filters:\n  failure_bands: [{from_deg: 350, to_deg: 10, action: reject}]\n",
                 {"va.onnx": onnx_models.constant_va(1.0, 0.0)})
    assert rows["happy-100@0"]["reject_reasons"] == ["failure_band"]     # 7.8
    assert rows["pleased-100@0"]["reject_reasons"] == ["failure_band"]   # 353.2
    assert rows["glad-100@0"]["status"] == "accepted"                    # 349: just outside
    assert rows["happy-100@0"]["pred_valence"] == 1.0                    # measured all the same (audit)


def test_skip_band_generates_nothing(build, tmp_path):
    rows = build(VA_ONLY + "filters:\n  failure_bands: [{from_deg: 242, to_deg: 329, action: skip}]\n",
                 {"va.onnx": onnx_models.constant_va(1.0, 0.0)})
    calm = rows["calm-100@0"]
    assert calm["status"] == "skipped" and calm["reject_reasons"] == ["failure_band"]
    assert calm["pred_valence"] is None and calm["width"] is None and calm["image_sha256"] is None
    with tarfile.open(tmp_path / "out" / "data" / "train-000000.tar") as tar:
        names = tar.getnames()
    assert not any("calm" in n for n in names) and any("sad-100" in n for n in names)


def test_verify_band_with_stricter_limits(build):
    extra = VA_ONLY + ("filters:\n  max_direction_error_deg: 60\n"
                       "  failure_bands: [{from_deg: 300, to_deg: 355, action: verify, max_direction_error_deg: 8}]\n")
    rows = build(extra, {"va.onnx": onnx_models.constant_va(1.0, 0.0)})
    assert rows["pleased-100@0"]["status"] == "accepted"                  # in band, 6.8 < 8
    assert rows["glad-100@0"]["reject_reasons"] == ["va_direction"]       # in band, 11 > 8
    assert rows["calm-100@0"]["reject_reasons"] == ["va_direction"]       # in band, 43.8 > 8
    assert rows["happy-100@0"]["status"] == "accepted"                    # outside: global 60


def test_keep_rejected_goes_to_separate_shards(tmp_path):
    text = BASE.replace("image: {format: png, size: 64},", "image: {format: png, size: 64}, keep_rejected: true,")
    (tmp_path / "va.onnx").write_bytes(onnx_models.constant_va(1.0, 0.0))
    (tmp_path / "recipe.yaml").write_text(text + VA_ONLY + "filters: {max_direction_error_deg: 30}\n")
    from synthfer.build import build as run_build
    from synthfer.recipe import load_recipe
    run_build(load_recipe(tmp_path / "recipe.yaml"))
    out = tmp_path / "out"
    with tarfile.open(out / "data" / "train-000000.tar") as good, tarfile.open(out / "rejected" / "rejected-000000.tar") as bad:
        good_names, bad_names = good.getnames(), bad.getnames()
    assert "0000000_sad-100.png" in bad_names and "0000000_sad-100.png" not in good_names
    assert "0000000_happy-100.png" in good_names and "0000000_happy-100.png" not in bad_names
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert all(r["image_sha256"] for r in rows)   # every image written somewhere, hashed


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_predictions_are_rejected_as_non_finite(build, value):
    # an infinity is not clamped into a confident +-1 (which the filters would then accept)
    rows = build(VA_ONLY + "filters: {max_distance: 0.5}\n", {"va.onnx": onnx_models.constant_va(value, value)})
    assert rows["happy-100@0"]["reject_reasons"] == ["non_finite"]
    assert rows["happy-100@0"]["pred_valence"] is None       # stored as null
    assert rows["neutral@0"]["reject_reasons"] == ["non_finite"]


def test_scalar_quality_gives_null_identity(build):
    rows = build("models:\n  quality: {kind: onnx, path: q.onnx, output: scalar, quality_scale: ofiq}\n",
                 {"q.onnx": onnx_models.mean_quality_scalar(scale=50.0)})
    assert all(r["identity_similarity"] is None for r in rows.values())
    assert all(0 < r["quality"] < 100 for r in rows.values())


@pytest.mark.parametrize("models, files, message", [
    ("models:\n  quality: {kind: onnx, path: q.onnx, preprocess: {size: 128}}\n",
     {"q.onnx": onnx_models.mean_quality(size=112)}, "q.onnx: quality model expects Nx3x112x112, recipe gives 128"),
    ("models:\n  va: {kind: onnx, path: va.onnx}\n", {"va.onnx": b"this is not a model\n"},
     "va.onnx: not an ONNX model ("),
    ("models:\n  va: {kind: onnx, path: va.onnx, valence_index: 8, arousal_index: 9}\n",
     {"va.onnx": onnx_models.constant_va(1.0, 0.0)}, "va.onnx: va output 'va' has 2 values per image, recipe reads index 9"),
    ("models:\n  va: {kind: onnx, path: gone.onnx}\n", {}, "models.va.path: file not found:"),
])
def test_model_problems_exit_2_before_any_shard(build, tmp_path, models, files, message):
    result = build(models, files, expect=2)
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("Error: "), lines
    assert not (tmp_path / "out").exists()
