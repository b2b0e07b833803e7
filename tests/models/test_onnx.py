"""ONNX models: load-time checks and their messages, batching, the builtin stand-ins and their cache."""

from __future__ import annotations

import os

import numpy as np
import pytest

from synthfer.errors import ModelFileError
from synthfer.models import builtin_onnx
from synthfer.models.builtin_onnx import builtin_model_path, quality_model_bytes, va_model_bytes
from synthfer.models.checkpoints import read_onnx
from synthfer.models.onnx import OnnxModel
from tests.onnx_models import (constant_va, fixed_batch_va, int_input_model, mean_quality, mean_quality_scalar,
                               scalar_magnitude, two_input_model)


def _batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def _error(fn) -> str:
    with pytest.raises(ModelFileError) as info:
        fn()
    text = str(info.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------- loading


def test_session_loads_and_describes_model():
    model = OnnxModel(mean_quality(), "q.onnx", "quality", 112)
    assert (model.input_name, model.output_names, model.fixed_batch) == ("input", ["embedding"], None)
    assert OnnxModel(fixed_batch_va(), "v.onnx", "va", 256).fixed_batch == 1
    # A cuda device falls back to CPU when this onnxruntime has no CUDA provider.
    assert OnnxModel(mean_quality(), "q.onnx", "quality", 112, device="cuda:0").run(_batch(2, 112)).shape == (2, 512)


def test_symbolic_spatial_dims_accept_any_size():
    model = OnnxModel(mean_quality(size=None, dim=8), "q.onnx", "quality", 64)
    assert model.run(_batch(2, 64)).shape == (2, 8)


@pytest.mark.parametrize("make, role, size, message", [
    (lambda: mean_quality(), "quality", 128, "q.onnx: quality model expects Nx3x112x112, recipe gives 128"),
    (lambda: fixed_batch_va(), "va", 224, "q.onnx: va model expects 1x3x256x256, recipe gives 224"),
    (lambda: mean_quality(channels=1), "quality", 112,
     "q.onnx: quality model expects Nx1x112x112, synthfer feeds Nx3x112x112"),
    (lambda: int_input_model(), "quality", 112,
     "q.onnx: quality model input 'input' is tensor(int64), synthfer feeds tensor(float)"),
    (lambda: two_input_model(), "quality", 112,
     "q.onnx: quality model has 2 inputs ('image', 'mask'); synthfer feeds a single image batch"),
    (lambda: b"this is text, not a model\n", "va", 256,
     "q.onnx: not an ONNX model (Failed to load model because protobuf parsing failed.)"),
])
def test_load_errors(make, role, size, message):
    assert _error(lambda: OnnxModel(make(), "q.onnx", role, size)) == message


def test_named_input_must_exist():
    assert _error(lambda: OnnxModel(mean_quality(), "q.onnx", "quality", 112, input_name="data")) == \
        "q.onnx: quality model has no input 'data' (inputs: 'input')"
    assert OnnxModel(mean_quality(), "q.onnx", "quality", 112, input_name="input").input_name == "input"


def test_output_checks():
    model = OnnxModel(constant_va(0.1, 0.2), "v.onnx", "va", 256)
    model.check_output(None, 2)
    model.check_output("va", 2)
    assert _error(lambda: model.check_output("va", 10)) == \
        "v.onnx: va output 'va' has 2 values per image, recipe reads index 9"
    assert _error(lambda: model.check_output("logits", 2)) == "v.onnx: va model has no output 'logits' (outputs: 'va')"
    assert _error(lambda: model.run(_batch(1, 256), "logits")) == \
        "v.onnx: va model has no output 'logits' (outputs: 'va')"
    OnnxModel(constant_va(0, 0, width=10, v_index=8, a_index=9), "v.onnx", "va", 256).check_output(None, 10)


# ---------------------------------------------------------------------------------- read_onnx


def test_read_onnx_good_and_bad_files(tmp_path):
    good = tmp_path / "good.onnx"
    good.write_bytes(mean_quality())
    assert read_onnx(good) == mean_quality()
    missing = tmp_path / "missing.onnx"
    assert _error(lambda: read_onnx(missing)) == f"{missing}: file not found"
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert _error(lambda: read_onnx(empty)) == f"{empty}: not an ONNX model (empty file)"
    text = tmp_path / "notes.onnx"
    text.write_text("weights: see README\nline two\n")
    assert _error(lambda: read_onnx(text)).startswith(f"{text}: not an ONNX model (")
    # Bytes protobuf accepts as an empty-ish message (just an IR version field).
    stub = tmp_path / "stub.onnx"
    stub.write_bytes(b"\x08\x08")
    assert _error(lambda: read_onnx(stub)) == f"{stub}: not an ONNX model (no graph or IR version)"
    assert _error(lambda: read_onnx(tmp_path)) == f"{tmp_path}: is a directory, not a model file"


# ------------------------------------------------------------------------------------- running


def test_known_outputs():
    x = _batch(4, 112)
    norms = np.linalg.norm(OnnxModel(mean_quality(scale=2.0), "q", "quality", 112).run(x), axis=1)
    np.testing.assert_allclose(norms, 2.0 * x.mean(axis=(1, 2, 3)) * np.sqrt(512), rtol=1e-5)
    for column, shape in ((False, (4,)), (True, (4, 1))):
        out = OnnxModel(mean_quality_scalar(column=column), "q", "quality", 112).run(x)
        assert out.shape == shape and out.dtype == np.float32
        np.testing.assert_allclose(out.reshape(-1), x.mean(axis=(1, 2, 3)), rtol=1e-5)
    out = OnnxModel(constant_va(0.25, -0.5, width=10, v_index=8, a_index=9), "v", "va", 256).run(_batch(3, 256))
    assert out.shape == (3, 10) and (out[:, 8] == 0.25).all() and (out[:, 9] == -0.5).all() and (out[:, :8] == 0).all()
    assert np.isnan(OnnxModel(constant_va(float("nan"), float("nan")), "v", "va", 256).run(_batch(2, 256))).all()


def test_batched_equals_row_by_row():
    model = OnnxModel(quality_model_bytes(), "builtin quality", "quality", 112)
    x = _batch(6, 112)
    rows = np.concatenate([model.run(x[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(model.run(x), rows, atol=1e-6, rtol=0)


@pytest.mark.parametrize("static_batch", [1, 2])
def test_fixed_batch_model_runs_any_batch(static_batch):
    model = OnnxModel(fixed_batch_va(batch=static_batch), "v", "va", 256)
    x = _batch(5, 256)
    out = model.run(x)
    expected = np.stack([x[:, 0].mean(axis=(1, 2)), -x[:, 1].mean(axis=(1, 2))], axis=1)
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_batch_one_scalar_output():
    x = _batch(3, 112)
    out = OnnxModel(scalar_magnitude(scale=30.0), "m", "quality", 112).run(x)
    np.testing.assert_allclose(out, 30.0 * x.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_empty_batch():
    model = OnnxModel(mean_quality(dim=8), "q", "quality", 112)
    assert model.run(np.zeros((0, 3, 112, 112), np.float32)).shape == (0, 8)


# ------------------------------------------------------------------------------------- builtin


def test_builtin_bytes_are_stable_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHFER_CACHE", str(tmp_path / "cache"))
    for role, make in (("quality", quality_model_bytes), ("va", va_model_bytes)):
        make.cache_clear()
        first = make()
        make.cache_clear()
        assert make() == first
        path = builtin_model_path(role)
        assert path.parent == tmp_path / "cache" and path.name.startswith(f"builtin-{role}-")
        assert path.read_bytes() == first and read_onnx(path) == first
        stamp = path.stat().st_mtime_ns
        os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
        assert builtin_model_path(role) == path and path.stat().st_mtime_ns == stamp - 10**9  # reused, not rewritten
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir()) == ["quality", "va"]
    with pytest.raises(ValueError):
        builtin_model_path("expression")


def test_builtin_cache_falls_back_when_unwritable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SYNTHFER_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(builtin_onnx.tempfile, "tempdir", str(tmp_path / "tmp"))
    path = builtin_model_path("va")
    assert path.parent == tmp_path / "tmp" / "synthfer" and path.read_bytes() == va_model_bytes()


def _smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    """Random 6x6 colour fields upsampled (nearest) to size: structured, unlike pixel noise."""
    low = np.random.default_rng(seed).random((n, 3, 6, 6), dtype=np.float32)
    idx = np.arange(size) * 6 // size
    return np.ascontiguousarray(low[:, :, idx][:, :, :, idx])


def test_builtin_quality_norm_formula_and_range():
    model = OnnxModel(quality_model_bytes(), "builtin quality", "quality", 112)
    x = _smooth_images(32, 112, seed=1)
    norms = np.linalg.norm(model.run(x).astype(np.float64), axis=1)
    thumb = x.reshape(32, 3, 8, 14, 8, 14).mean(axis=(3, 5)).reshape(32, -1).astype(np.float64)
    contrast = np.linalg.norm(thumb - thumb.mean(axis=1, keepdims=True), axis=1)
    np.testing.assert_allclose(norms, np.hypot(builtin_onnx.Q_FLOOR, builtin_onnx.Q_GAIN * contrast), rtol=1e-5)
    assert 15 < norms.min() and norms.max() < 45 and norms.max() - norms.min() > 4
    flat = np.full((2, 3, 112, 112), 0.5, np.float32)
    np.testing.assert_allclose(np.linalg.norm(model.run(flat), axis=1), builtin_onnx.Q_FLOOR, rtol=1e-5)
    # Pixel noise has a uniform thumbnail, hence low quality (near the floor).
    noise = (np.random.default_rng(2).integers(0, 256, (4, 3, 112, 112)) / 255).astype(np.float32)
    assert (np.linalg.norm(model.run(noise), axis=1) < 12).all()


def test_builtin_va_range_and_spread():
    model = OnnxModel(va_model_bytes(), "builtin va", "va", 256)
    out = model.run(_smooth_images(64, 256, seed=3))
    assert out.shape == (64, 2) and np.isfinite(out).all()
    assert (np.linalg.norm(out, axis=1) < 1).all()
    quadrants = {(v > 0, a > 0) for v, a in out}
    assert len(quadrants) == 4
