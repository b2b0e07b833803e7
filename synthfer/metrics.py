"""The VA-accuracy protocol's formulas, vectorised. The decide stage and the reports both call
these, so a filter decision and a report cell can never disagree.

Per sample with target (t_v, t_a) and prediction (p_v, p_a) (protocol.md):
  target intensity s = hypot(t_v, t_a), target angle T = atan2(t_a, t_v) mod 360
  predicted angle P = atan2(p_a, p_v) mod 360, predicted intensity m = hypot(p_v, p_a)
  direction error = wrapped |P - T| in [0, 180]   (NaN where s == 0: a direction is meaningless)
  magnitude error = |m - s|; valence/arousal error = |p - t|; distance error = hypot(p - t)
NaN stands for "not measured / not defined"; callers turn it into null.
"""

from __future__ import annotations

import numpy as np

ERROR_COLUMNS = ("direction_error_deg", "magnitude_error", "valence_error", "arousal_error", "distance_error")


def angle_deg(valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Angle in [0, 360), NaN at the origin."""
    v, a = np.asarray(valence, dtype=np.float64), np.asarray(arousal, dtype=np.float64)
    out = np.degrees(np.arctan2(a, v)) % 360.0
    return np.where(np.hypot(v, a) == 0.0, np.nan, out)


def wrapped_difference(a_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    """Unsigned smallest angle between two directions, in [0, 180]."""
    d = np.abs(np.asarray(a_deg, dtype=np.float64) - np.asarray(b_deg, dtype=np.float64)) % 360.0
    return np.minimum(d, 360.0 - d)


def signed_difference(pred_deg: np.ndarray, target_deg: np.ndarray) -> np.ndarray:
    """Signed error pred - target in (-180, 180]: positive = predicted counter-clockwise of target."""
    d = (np.asarray(pred_deg, dtype=np.float64) - np.asarray(target_deg, dtype=np.float64)) % 360.0
    return np.where(d > 180.0, d - 360.0, d)


def va_errors(target_v, target_a, pred_v, pred_a) -> dict[str, np.ndarray]:
    """All protocol quantities for arrays of samples; keys match the manifest's column names."""
    tv, ta = np.asarray(target_v, dtype=np.float64), np.asarray(target_a, dtype=np.float64)
    pv, pa = np.asarray(pred_v, dtype=np.float64), np.asarray(pred_a, dtype=np.float64)
    target_s = np.hypot(tv, ta)
    pred_s = np.hypot(pv, pa)
    target_angle = angle_deg(tv, ta)
    pred_angle = angle_deg(pv, pa)
    direction = wrapped_difference(pred_angle, target_angle)
    direction = np.where(target_s == 0.0, np.nan, direction)
    return {
        "pred_angle_deg": pred_angle,
        "pred_intensity": pred_s,
        "direction_error_deg": direction,
        "magnitude_error": np.abs(pred_s - target_s),
        "valence_error": np.abs(pv - tv),
        "arousal_error": np.abs(pa - ta),
        "distance_error": np.hypot(pv - tv, pa - ta),
    }


def ofiq_quality(magnitude: np.ndarray) -> np.ndarray:
    """OFIQ's mapping of a MagFace magnitude to a 0..100 quality score (ISO/IEC 29794-5 reference)."""
    return 100.0 / (1.0 + np.exp((23.0 - np.asarray(magnitude, dtype=np.float64)) / 2.6))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine between [N, D] arrays; NaN where either row is all zeros."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((na > 0) & (nb > 0), (a * b).sum(axis=1) / (na * nb), np.nan)
