"""Assess: measure every generated image with the quality model and the VA estimator.

Preprocessing follows each model's recipe settings (crop box, size, resample, channel order,
scale, mean, std) and runs batched on the models' device; only the final float batch goes to
onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from synthfer import metrics
from synthfer.io.records import NOT_MEASURED, UNDEFINED, Scores, score
from synthfer.recipe import Preprocess, QualitySpec, VASpec

ASSESS_MIN_BATCH = 64  # images per preprocessing + onnxruntime call, at least


def preprocess(pixels: torch.Tensor, spec: Preprocess) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float32 [N, 3, size, size] as the model expects."""
    assert pixels.dtype == torch.uint8 and pixels.ndim == 4 and pixels.shape[3] == 3, (pixels.dtype, pixels.shape)
    h, w = pixels.shape[1:3]
    left, top, right, bottom = spec.crop
    x0, x1 = round(left * w), max(round(right * w), round(left * w) + 1)
    y0, y1 = round(top * h), max(round(bottom * h), round(top * h) + 1)
    x = pixels[:, y0:y1, x0:x1, :].permute(0, 3, 1, 2).float()
    if spec.channels == "bgr":
        x = x.flip(1)
    # Normalise before resizing: every resample mode here is a per-channel weighted average with
    # weights summing to 1, so the affine normalisation commutes with it, and the crop is usually
    # much smaller than the model input (a 1024 frame's crop excepted), so this is the cheap order.
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    x = x * (spec.scale / std) - mean / std
    if x.shape[2:] != (spec.size, spec.size):
        if spec.resample in ("nearest", "area"):
            x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.resample)
        else:  # antialias only matters when shrinking; it is a no-op when enlarging
            x = F.interpolate(x, size=(spec.size, spec.size), mode=spec.resample, align_corners=False, antialias=True)
    assert x.shape[1:] == (3, spec.size, spec.size), x.shape
    return x.contiguous().cpu().numpy()


@dataclass
class Measurements:
    """Per image; NaN where a model is absent or gave nothing usable."""
    quality: np.ndarray          # [N] on the configured scale
    embedding: np.ndarray | None  # [N, D] when the quality model gives an embedding
    pred_valence: np.ndarray     # [N], clamped to [-1, 1]
    pred_arousal: np.ndarray


class Assessor:
    def __init__(self, quality_model, quality: QualitySpec | None, va_model, va: VASpec | None):
        self.quality_model, self.quality = quality_model, quality
        self.va_model, self.va = va_model, va

    @property
    def measures_anything(self) -> bool:
        return self.quality_model is not None or self.va_model is not None

    @property
    def has_embedding(self) -> bool:
        return self.quality_model is not None and self.quality.output == "embedding"

    def measure(self, pixels: torch.Tensor, batch_size: int) -> Measurements:
        # The assessment models are small next to the generator: larger chunks than the
        # generator's batch cut per-call overhead. Fixed per batch_size, so results stay deterministic.
        batch_size = max(batch_size, ASSESS_MIN_BATCH)
        n = pixels.shape[0]
        nan = np.full(n, np.nan)
        quality, embedding, pv, pa = nan.copy(), None, nan.copy(), nan.copy()
        if self.quality_model is not None and n:
            out = self._run(self.quality_model, self.quality.output_name, self.quality.preprocess, pixels, batch_size)
            if self.quality.output == "embedding":
                embedding = out.reshape(n, -1).astype(np.float64)
                quality = np.linalg.norm(embedding, axis=1)
            else:
                quality = out.reshape(n, -1)[:, 0].astype(np.float64)
            if self.quality.quality_scale == "ofiq":
                quality = metrics.ofiq_quality(quality)
        if self.va_model is not None and n:
            out = self._run(self.va_model, self.va.output_name, self.va.preprocess, pixels, batch_size).reshape(n, -1)
            pv = np.clip(out[:, self.va.valence_index].astype(np.float64), -1.0, 1.0)  # NaN stays NaN
            pa = np.clip(out[:, self.va.arousal_index].astype(np.float64), -1.0, 1.0)
        return Measurements(quality, embedding, pv, pa)

    @staticmethod
    def _run(model, output_name, spec: Preprocess, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
        chunks = [model.run(preprocess(pixels[s:s + batch_size], spec), output_name)
                  for s in range(0, pixels.shape[0], batch_size)]
        return np.concatenate(chunks)


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
        for k in range(n):
            values = {name: score(v[k]) for name, v in err.items()}
            if targets[k].intensity == 0.0:   # no direction at the origin: undefined, not a failure
                values["direction_error_deg"] = UNDEFINED
            if m.pred_valence[k] == 0.0 and m.pred_arousal[k] == 0.0:  # predicted exactly neutral
                values["pred_angle_deg"] = values["direction_error_deg"] = UNDEFINED
            out[k] = out[k].with_(pred_valence=score(m.pred_valence[k]), pred_arousal=score(m.pred_arousal[k]),
                                  **values)
    return out
