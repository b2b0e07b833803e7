"""Decide: accepted, rejected (every failing reason) or skipped, per sample.

Filters are small functions that return a reason or None; all of them run, so a rejected row
lists everything that was wrong with it and thresholds can be re-tuned from the manifest alone.
Neutral samples are judged on quality only: they have no direction to miss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synthfer import circumplex
from synthfer.plan import Target
from synthfer.recipe import Band, Filters

ACCEPTED, REJECTED, SKIPPED = "accepted", "rejected", "skipped"
_SEVERITY = {"skip": 3, "reject": 2, "verify": 1}
_VA_COLUMNS = {"va_direction": "direction_error_deg", "va_distance": "distance_error",
               "va_magnitude": "magnitude_error"}


@dataclass(frozen=True)
class Verdict:
    status: str
    reasons: tuple[str, ...] = ()


class Decider:
    def __init__(self, filters: Filters):
        self.filters = filters

    def band_of(self, target: Target) -> Band | None:
        """The most severe failure band containing the target's direction (None for neutral)."""
        if target.angle_deg is None:
            return None
        hits = [b for b in self.filters.failure_bands if circumplex.in_band(target.angle_deg, b.from_deg, b.to_deg)]
        return max(hits, key=lambda b: _SEVERITY[b.action], default=None)

    def before_generation(self, target: Target) -> Verdict | None:
        """A verdict that needs no image (skip bands), else None: generate it."""
        band = self.band_of(target)
        if band is not None and band.action == "skip":
            return Verdict(SKIPPED, ("failure_band",))
        return None

    def after_measurement(self, target: Target, scores: dict, finite_image: bool) -> Verdict:
        """scores: the manifest's score columns for this sample (None = not measured)."""
        reasons = []
        if not finite_image or any(isinstance(v, float) and not math.isfinite(v)
                                   for v in scores.values() if v is not None):
            reasons.append("non_finite")
        f = self.filters
        if _below(scores.get("quality"), f.min_quality):
            reasons.append("low_quality")
        if not target.is_neutral:
            if _below(scores.get("identity_similarity"), f.min_identity_similarity):
                reasons.append("identity_drift")
            band = self.band_of(target)
            limits = f.va_limits()
            if band is not None and band.action == "reject":
                reasons.append("failure_band")
            elif band is not None and band.action == "verify" and band.va_limits():
                limits = band.va_limits()  # the band's own (usually stricter) limits replace the global ones
            for reason, limit in limits.items():
                value = scores.get(_VA_COLUMNS[reason])
                if value is None:
                    # A prediction at the exact origin has no direction: the label cannot be confirmed.
                    if reason == "va_direction" and target.intensity > 0 and scores.get("pred_valence") is not None:
                        reasons.append(reason)
                elif math.isfinite(value) and value > limit:
                    reasons.append(reason)
        return Verdict(REJECTED, tuple(reasons)) if reasons else Verdict(ACCEPTED)


def _below(value, threshold) -> bool:
    """Under a set threshold; an unmeasurable score (NaN) is caught by non_finite, not here."""
    return threshold is not None and value is not None and math.isfinite(value) and value < threshold
