"""Stage-level batching (the batch size must not change a sample beyond float noise) and the
assessment preprocessing's resample order."""

import numpy as np
import pytest
import torch

from synthfer.models.builtin import builtin_editor, builtin_generator
from synthfer.stages import edit, identities


def test_batched_generation_equals_one_at_a_time():
    # The build's batch stage, fed 1 and 6 samples at a time, gives the same images.
    g, e = builtin_generator(0), builtin_editor(0)
    seeds = [11, 12, 13]
    va = torch.tensor([[0.0, 0.0], [0.9, 0.1], [-0.5, -0.5], [0.2, 0.8], [0.0, 0.0], [-1.0, 0.0]])
    edited = torch.tensor([False, True, True, True, False, True])
    rows = torch.tensor([0, 0, 1, 1, 2, 2])
    with torch.inference_mode():
        out = {}
        for bs in (1, 6):
            ws_id = identities.identity_ws(g, seeds, 0.7, None, torch.device("cpu"), bs)
            out[bs] = torch.cat([edit.render_batch(g, e, ws_id[rows[s:s + bs]], va[s:s + bs][edited[s:s + bs]],
                                                   edited[s:s + bs]) for s in range(0, len(rows), bs)])
        unedited = g.synthesis(ws_id[torch.tensor([0, 2])]).float()
    assert out[6].shape == (6, 3, g.resolution, g.resolution)
    assert (out[1] - out[6]).abs().max().item() <= 1e-5
    assert (out[6][[0, 4]] - unedited).abs().max().item() <= 1e-5   # neutral is the identity's own image
    assert not torch.allclose(out[6][1], out[6][0], atol=1e-3)   # an edit changes it


def test_identity_latent_is_independent_of_neighbours():
    g = builtin_generator(0)
    with torch.inference_mode():
        alone = identities.identity_ws(g, [42], 0.7, None, torch.device("cpu"), 4)
        among = identities.identity_ws(g, [7, 42, 9], 0.7, None, torch.device("cpu"), 4)
    assert (alone[0] - among[1]).abs().max().item() <= 1e-5


def _preprocess_reference(pixels, spec):
    """The plain order: crop, permute, float, channel order, resize, then normalise."""
    import torch.nn.functional as F

    from synthfer.stages.assess import crop_edges

    h, w = pixels.shape[1:3]
    x0, x1 = crop_edges(spec.crop[0], spec.crop[2], w, spec.rounding)
    y0, y1 = crop_edges(spec.crop[1], spec.crop[3], h, spec.rounding)
    x = pixels[:, y0:y1, x0:x1].permute(0, 3, 1, 2).float()
    if spec.channels == "bgr":
        x = x.flip(1)
    if x.shape[2:] != (spec.size, spec.size):
        kw = {} if spec.resample in ("nearest", "area") else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.resample, **kw)
    scale = spec.scale / torch.tensor(spec.std)
    shift = torch.tensor(spec.mean) / torch.tensor(spec.std)
    return x * scale.view(1, 3, 1, 1) - shift.view(1, 3, 1, 1)


@pytest.mark.parametrize("frame,crop,size", [(64, [0.1, 0.1, 0.9, 0.9], 256), (64, [0.0, 0.0, 1.0, 1.0], 256),
                                             (50, [0.1, 0.2, 0.9, 0.7], 224), (97, [0.0, 0.0, 1.0, 1.0], 31),
                                             (33, [0.05, 0.0, 0.95, 1.0], 99)])
@pytest.mark.parametrize("resample", ["nearest", "bilinear"])
def test_preprocess_matches_the_plain_order(frame, crop, size, resample):
    """Normalise-then-resize (and nearest as repeats on CPU) gives the values of the plain order:
    exactly for nearest (values are only copied), to float rounding for the weighted resamples."""
    from synthfer.recipe import VAPreprocess
    from synthfer.stages.assess import preprocess

    pixels = torch.randint(0, 256, (3, frame, frame, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(frame))
    for rounding, channels in (("floor", "rgb"), ("nearest", "bgr")):
        spec = VAPreprocess(crop=crop, size=size, resample=resample, rounding=rounding, channels=channels,
                            mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        got, want = preprocess(pixels, spec), _preprocess_reference(pixels, spec).numpy()
        assert got.shape == want.shape == (3, 3, size, size) and got.dtype == np.float32 and got.flags.c_contiguous
        if resample == "nearest":
            assert np.array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
        assert np.array_equal(preprocess(pixels[1:2], spec), got[1:2])   # batch-invariant


def test_finite_rows_matches_the_per_value_test():
    """The worker's cheap NaN/Inf test (row sums first) gives exactly the per-value answer,
    including finite values whose sum overflows to Inf."""
    from synthfer.worker import _finite_rows

    img = torch.rand(7, 3, 8, 8) * 2 - 1
    img[1, 0, 2, 3] = float("nan")
    img[2, 2, 7, 7] = float("inf")
    img[3, 1, 0, 0] = float("-inf")
    img[4, 0, 0, 0], img[4, 0, 0, 1] = float("inf"), float("-inf")   # the sum is NaN
    img[5, :, 0, :2] = 3e38                                         # finite, but the sum overflows
    expected = torch.isfinite(img).flatten(1).all(1)
    assert expected.tolist() == [True, False, False, False, False, True, True]
    assert torch.equal(_finite_rows(img), expected)
    assert torch.equal(_finite_rows(img[[0, 5, 6]]), torch.tensor([True, True, True]))   # overflow only
    assert torch.equal(_finite_rows(img[[0, 6]]), torch.tensor([True, True]))            # the fast path alone


def test_assessment_chunks_give_the_same_numbers_in_parallel_and_in_turn(monkeypatch):
    """The last shard's assessment runs its chunks on every core (nothing is generating); while
    the generator runs they go one by one. Both give the same bytes, in order."""
    from synthfer import runtime
    from synthfer.models.builtin_onnx import builtin_model_path
    from synthfer.models.checkpoints import read_onnx
    from synthfer.models.onnx import OnnxModel
    from synthfer.models.specs import QualitySpec, VASpec
    from synthfer.stages.assess import Assessor

    monkeypatch.setattr(runtime, "cores", lambda: 2)
    q, va = QualitySpec(), VASpec()
    assessor = Assessor(OnnxModel(read_onnx(builtin_model_path("quality")), "q", "quality", q.preprocess.size), q,
                        [(OnnxModel(read_onnx(builtin_model_path("va")), "va", "va", va.preprocess.size), va)])
    pixels = torch.randint(0, 256, (150, 64, 64, 3), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    calls = []
    run_chunk = assessor.run_chunk
    monkeypatch.setattr(assessor, "run_chunk", lambda p, w=True: calls.append(p.shape[0]) or run_chunk(p, w))
    parallel = assessor.measure(pixels, 16)
    assert sorted(calls) == [22, 64, 64]          # chunks of max(batch, 64), whatever the order they ran in
    with runtime.generating():
        in_turn = assessor.measure(pixels, 16)
    for name in ("quality", "embedding", "pred_valence", "pred_arousal", "va_each"):
        a, b = getattr(parallel, name), getattr(in_turn, name)
        assert a.tobytes() == b.tobytes(), name
