"""Assess: measure every generated image with the quality model and the VA estimator.

Preprocessing follows each model's recipe settings (crop box, size, resample, channel order,
scale, mean, std) and runs batched on the models' device; only the final float batch goes to
onnxruntime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from synthfer import metrics, runtime
from synthfer.errors import ModelFileError
from synthfer.io.records import NOT_MEASURED, UNDEFINED, Scores, score
from synthfer.recipe import Preprocess, QualitySpec, VASpec

ASSESS_MIN_BATCH = 64  # images per preprocessing + onnxruntime call, at least (Assessor.chunk_size)


def crop_edges(start: float, end: float, side: int, rounding: str) -> tuple[int, int]:
    """Pixel edges [a, b) of a crop given as fractions. floor is EmoStyle's int(0.1 * side) and
    int(0.9 * side) (rows 102:921 of a 1024 frame); nearest rounds (102:922)."""
    edge = math.floor if rounding == "floor" else round
    a = edge(start * side)
    return a, max(edge(end * side), a + 1)


def preprocess(pixels: torch.Tensor, spec: Preprocess) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float32 [N, 3, size, size] as the model expects."""
    assert pixels.dtype == torch.uint8 and pixels.ndim == 4 and pixels.shape[3] == 3, (pixels.dtype, pixels.shape)
    h, w = pixels.shape[1:3]
    left, top, right, bottom = spec.crop
    x0, x1 = crop_edges(left, right, w, spec.rounding)
    y0, y1 = crop_edges(top, bottom, h, spec.rounding)
    view = pixels[:, y0:y1, x0:x1, :]
    # Normalise before resizing: every resample mode here is a per-channel weighted average with
    # weights summing to 1, so the affine normalisation commutes with it, and the crop is usually
    # much smaller than the model input (a 1024 frame's crop excepted), so this is the cheap order.
    # One pass per channel reads the HWC crop and writes contiguous NCHW floats, normalised and
    # in the model's channel order: about 2x faster than permute, float, flip, then normalise,
    # with the same float32 arithmetic (docs/performance.md).
    scale = spec.scale / torch.tensor(spec.std)          # float32, as the model's recipe states them
    shift = torch.tensor(spec.mean) / torch.tensor(spec.std)
    x = torch.empty((view.shape[0], 3, y1 - y0, x1 - x0), dtype=torch.float32, device=pixels.device)
    for c, src in enumerate((2, 1, 0) if spec.channels == "bgr" else (0, 1, 2)):
        torch.mul(view[..., src], scale[c].item(), out=x[:, c])
        x[:, c].sub_(shift[c].item())
    if x.shape[2:] != (spec.size, spec.size):
        if spec.resample == "nearest" and x.device.type == "cpu":
            # Each source row and column repeated as often as torch's nearest picks it: the same
            # values, 2-3x faster than F.interpolate on CPU (at 64 px the VA input's upscale to
            # 256 was the writer's largest cost).
            rows, cols = _nearest_repeats(x.shape[2], spec.size), _nearest_repeats(x.shape[3], spec.size)
            out = np.repeat(np.repeat(x.numpy(), cols, axis=3), rows, axis=2)
            assert out.shape[1:] == (3, spec.size, spec.size), out.shape
            return out
        if spec.resample in ("nearest", "area"):
            x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.resample)
        else:  # antialias only matters when shrinking; it is a no-op when enlarging
            x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.resample, align_corners=False, antialias=True)
    assert x.shape[1:] == (3, spec.size, spec.size), x.shape
    return x.contiguous().cpu().numpy()


@lru_cache(maxsize=64)
def _nearest_repeats(n_in: int, n_out: int) -> np.ndarray:
    """How often torch's nearest resize from n_in to n_out takes each source index, read from
    torch itself (an index ramp resized), so the repeat gives exactly F.interpolate's output."""
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, 1, n_in)
    index = F.interpolate(ramp, size=(1, n_out), mode="nearest").view(-1).long().numpy()
    assert (np.diff(index) >= 0).all(), "nearest indices must not decrease"
    return np.bincount(index, minlength=n_in)


@dataclass
class Measurements:
    """Per image; NaN where a model is absent or gave nothing usable."""
    quality: np.ndarray          # [N] on the configured scale
    embedding: np.ndarray | None  # [N, D] when the quality model gives an embedding
    pred_valence: np.ndarray     # [N], clamped to [-1, 1]; the estimators' mean when several
    pred_arousal: np.ndarray
    va_each: np.ndarray | None = None  # [K, N, 2] each estimator's clamped (valence, arousal)

    @property
    def disagreement(self) -> np.ndarray:
        """[N] the largest distance between two estimators' predictions (NaN for fewer than two)."""
        n = self.pred_valence.shape[0]
        if self.va_each is None or self.va_each.shape[0] < 2:
            return np.full(n, np.nan)
        diff = self.va_each[:, None, :, :] - self.va_each[None, :, :, :]   # [K, K, N, 2]
        return np.sqrt((diff ** 2).sum(-1)).max(axis=(0, 1))


class Assessor:
    def __init__(self, quality_model, quality: QualitySpec | None, va: list[tuple[object, VASpec]]):
        self.quality_model, self.quality = quality_model, quality
        self.va = list(va)   # (model, its recipe block) per estimator, in models.va order

    @property
    def has_embedding(self) -> bool:
        return self.quality_model is not None and self.quality.output == "embedding"

    @staticmethod
    def chunk_size(batch_size: int) -> int:
        """Images per preprocessing + onnxruntime call. The assessment models are small next to
        the generator: larger chunks than its batch cut per-call overhead. Fixed per batch_size,
        so results stay deterministic however the chunks are scheduled."""
        return max(batch_size, ASSESS_MIN_BATCH)

    def measure(self, pixels: torch.Tensor, batch_size: int, with_quality: bool = True) -> Measurements:
        """Every image of `pixels` (uint8 [N, H, W, 3]), in chunks of chunk_size(batch_size)."""
        size, n = self.chunk_size(batch_size), pixels.shape[0]
        chunks = [pixels[s:s + size] for s in range(0, n, size)]
        pool = runtime.pool("side")
        if pool is not None and len(chunks) > 1 and not runtime.generating_now():
            # Nothing else is running (the last shard's commit): the chunks share the cores.
            outputs = list(pool.map(lambda chunk: self._side(chunk, with_quality), chunks))
        else:
            outputs = [self.run_chunk(chunk, with_quality) for chunk in chunks]
        nan = np.full(n, np.nan)
        quality, embedding, pv, pa = nan.copy(), None, nan.copy(), nan.copy()
        if with_quality and self.quality_model is not None and n:
            out = np.concatenate([q for q, _ in outputs])
            if self.quality.output == "embedding":
                embedding = out.reshape(n, -1).astype(np.float64)
                quality = np.linalg.norm(embedding, axis=1)
            else:
                quality = out.reshape(n, -1)[:, 0].astype(np.float64)
            if self.quality.quality_scale == "ofiq":
                quality = metrics.ofiq_quality(quality)
        va_each = None
        if self.va and n:
            each = []
            for j, (model, spec) in enumerate(self.va):
                out = np.concatenate([va[j] for _, va in outputs]).reshape(n, -1)
                if out.shape[1] <= max(spec.valence_index, spec.arousal_index):  # a symbolic width passed load
                    raise ModelFileError(f"{model.label}: va output has {out.shape[1]} values per image, recipe "
                                         f"reads index {max(spec.valence_index, spec.arousal_index)}")
                each.append(np.stack([out[:, spec.valence_index], out[:, spec.arousal_index]], -1))
            raw = np.stack(each).astype(np.float64)
            raw[np.isinf(raw)] = np.nan   # clamped, an infinity would read as a confident +-1
            va_each = np.clip(raw, -1.0, 1.0)   # [K, N, 2]; NaN stays NaN
            # The mean of clamped predictions: one estimator's wild output cannot outvote the rest
            # by more than its share of the unit range.
            pv, pa = va_each[..., 0].mean(0), va_each[..., 1].mean(0)
        return Measurements(quality, embedding, pv, pa, va_each)

    def _side(self, chunk: torch.Tensor, with_quality: bool) -> tuple:
        with runtime.side_slot():
            return self.run_chunk(chunk, with_quality)

    def run_chunk(self, pixels: torch.Tensor, with_quality: bool = True) -> tuple:
        """One chunk's raw model outputs: (the quality model's, or None; [each VA model's])."""
        q = None
        if with_quality and self.quality_model is not None:
            q = self.quality_model.run(preprocess(pixels, self.quality.preprocess), self.quality.output_name)
        return q, [model.run(preprocess(pixels, spec.preprocess), spec.output_name) for model, spec in self.va]

    def measure_va(self, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
        """[N] complex valence + i*arousal (the estimators' clamped mean; NaN where unusable), for
        the correction loop, which needs nothing else."""
        if not self.va or not pixels.shape[0]:
            return np.full(pixels.shape[0], np.nan + 0j)
        m = self.measure(pixels, batch_size, with_quality=False)
        return m.pred_valence + 1j * m.pred_arousal


def scores_of(targets: list, idents: list[int], m: Measurements, quality: bool, va: bool) -> list[Scores]:
    """The Scores of each generated sample, the only place score columns are filled in.

    targets: the n generated samples' targets; idents: their identities, then (beyond n) the
    identities whose neutral image was rendered only as an identity reference.
    """
    n = len(targets)
    out = [Scores() for _ in range(n)]
    if quality:
        sims = None
        if m.embedding is not None:
            neutral_row: dict[int, int] = {}
            for k, ident in enumerate(idents):
                if k >= n or targets[k].is_neutral:
                    neutral_row.setdefault(ident, k)
            sims = metrics.cosine_similarity(m.embedding[:n], m.embedding[[neutral_row[i] for i in idents[:n]]])
        for k in range(n):
            similarity = NOT_MEASURED if sims is None else UNDEFINED if targets[k].is_neutral else score(sims[k])
            out[k] = out[k].with_(quality=score(m.quality[k]), identity_similarity=similarity)
    if va:
        err = metrics.va_errors([t.valence for t in targets], [t.arousal for t in targets],
                                m.pred_valence[:n], m.pred_arousal[:n])
        spread = m.disagreement
        several = m.va_each is not None and m.va_each.shape[0] > 1
        for k in range(n):
            values = _va_values(targets[k], m.pred_valence[k], m.pred_arousal[k], {name: v[k] for name, v in err.items()})
            if m.va_each is not None:
                values["pred_valence_each"] = tuple(_finite_or_none(x) for x in m.va_each[:, k, 0])
                values["pred_arousal_each"] = tuple(_finite_or_none(x) for x in m.va_each[:, k, 1])
            if several:
                values["va_disagreement"] = score(spread[k])
            out[k] = out[k].with_(**values)
    return out


def va_scores(target, pred_valence: float, pred_arousal: float) -> dict:
    """The VA score columns of one prediction against its target, as scores_of fills them (the
    correction's accounting judges a first attempt with these)."""
    err = metrics.va_errors([target.valence], [target.arousal], [pred_valence], [pred_arousal])
    return _va_values(target, pred_valence, pred_arousal, {name: v[0] for name, v in err.items()})


def _va_values(target, pv: float, pa: float, errors: dict) -> dict:
    values = {name: score(v) for name, v in errors.items()}
    if target.intensity == 0.0:   # no direction at the origin: undefined, not a failure
        values["direction_error_deg"] = UNDEFINED
    if pv == 0.0 and pa == 0.0:   # predicted exactly neutral
        values["pred_angle_deg"] = values["direction_error_deg"] = UNDEFINED
    return dict(values, pred_valence=score(pv), pred_arousal=score(pa))


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None
