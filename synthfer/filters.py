"""Filters: the recipe's `filters` block, the rules built from it, and the decider that runs them.

Each rule is a small object with one `check(subject, scores) -> reason | None`; every rule runs,
so a rejected row lists everything that was wrong with it and thresholds can be re-tuned from
the manifest alone, and every rejection is counted per rule. Adding a filter means adding its
field to `Filters` and a `Rule` subclass to RULES below (and a line to README's reason table);
`register()` adds rules from outside the package. Reason names live here only: the report and
README take them from `REASONS`.

Neutral samples are judged on quality only: they have no direction to miss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from synthfer import circumplex
from synthfer.io.records import NON_FINITE, UNDEFINED, Scores, is_number
from synthfer.blocks import PathError, Strict

ACCEPTED, REJECTED, SKIPPED = "accepted", "rejected", "skipped"
_SEVERITY = {"skip": 3, "reject": 2, "verify": 1}


# ------------------------------------------------------------------------------------------------ schema


class Thresholds(Strict):
    """VA-accuracy limits; a sample beyond any of them is rejected. None = not checked."""
    max_direction_error_deg: float | None = Field(None, gt=0, le=180)
    max_distance: float | None = Field(None, gt=0)
    max_magnitude_error: float | None = Field(None, gt=0)

    def va_limits(self) -> dict:
        return {k: v for k, v in (("va_direction", self.max_direction_error_deg), ("va_distance", self.max_distance),
                                  ("va_magnitude", self.max_magnitude_error)) if v is not None}


class Band(Thresholds):
    """Target directions where the editor is known to miss (EmoStyle: 242 to 329 degrees).

    skip: not generated (row status skipped); reject: generated, measured, always rejected;
    verify: kept only if it passes the accuracy limits (the band's own, else the global ones).
    """
    from_deg: float = Field(ge=0, lt=360)
    to_deg: float = Field(ge=0, le=360)
    action: Literal["skip", "reject", "verify"] = "verify"

    @property
    def label(self) -> str:
        return f"{self.from_deg:g}-{self.to_deg:g}"


class Filters(Thresholds):
    min_quality: float | None = None                  # on models.quality.quality_scale
    min_identity_similarity: float | None = Field(None, ge=-1, le=1)  # cosine to the identity's neutral
    max_va_disagreement: float | None = Field(None, gt=0)  # several VA estimators: largest distance between two
    failure_bands: list[Band] = []

    @model_validator(mode="after")
    def _verify_bands_have_limits(self):
        for i, band in enumerate(self.failure_bands):
            if band.action == "verify" and not (band.va_limits() or self.va_limits()):
                raise PathError(("failure_bands", i, "action"),
                                "verify needs accuracy limits: the band's own max_direction_error_deg, "
                                "max_distance or max_magnitude_error, or the global ones")
        return self


# ------------------------------------------------------------------------------------------------ rules


@dataclass(frozen=True)
class Subject:
    """What a rule judges besides the scores: the target, its failure band and the VA limits
    that apply to it (the band's own when it is a verify band with limits, else the global ones)."""
    target: object                # plan.Target
    band: Band | None
    limits: dict[str, float]
    finite_image: bool


class Rule(ABC):
    reason: ClassVar[str]             # the manifest's reject reason
    short: ClassVar[str]              # its label on contact sheets
    meaning: ClassVar[str]            # one line for README and the report
    field: ClassVar[str | None] = None  # the filters.* field that turns it on (None: always on)
    needs: ClassVar[str | None] = None  # quality | embedding | va: the model its field needs

    @classmethod
    def build(cls, filters: Filters) -> "Rule | None":
        """The rule for this recipe, or None when the recipe does not ask for it."""
        return cls() if cls.field is None or getattr(filters, cls.field) is not None else None

    @abstractmethod
    def check(self, subject: Subject, scores: Scores) -> str | None:
        """The reason when the sample fails this rule, else None."""


class NonFinite(Rule):
    reason, short, meaning = "non_finite", "NaN", "the image or a score was NaN or infinite"

    def check(self, subject, scores):
        return self.reason if not subject.finite_image or scores.non_finite else None


class _Threshold(Rule):
    """Reject below `filters.<field>` (an unmeasurable score is non_finite's business)."""
    score: ClassVar[str]
    neutral_too: ClassVar[bool] = True

    def __init__(self, threshold: float):
        self.threshold = threshold

    @classmethod
    def build(cls, filters):
        value = getattr(filters, cls.field)
        return None if value is None else cls(value)

    def check(self, subject, scores):
        if subject.target.is_neutral and not self.neutral_too:
            return None
        value = getattr(scores, self.score)
        return self.reason if is_number(value) and value < self.threshold else None


class LowQuality(_Threshold):
    reason, short, meaning = "low_quality", "Q", "quality below filters.min_quality"
    field, needs, score = "min_quality", "quality", "quality"


class IdentityDrift(_Threshold):
    reason, short, meaning = "identity_drift", "ID", "identity similarity below filters.min_identity_similarity"
    field, needs, score, neutral_too = "min_identity_similarity", "embedding", "identity_similarity", False


class FailureBand(Rule):
    reason, short, meaning = "failure_band", "BAND", "target in a failure band with action skip or reject"

    @classmethod
    def build(cls, filters):
        return cls() if any(b.action in ("skip", "reject") for b in filters.failure_bands) else None

    def check(self, subject, scores):
        return self.reason if subject.band is not None and subject.band.action == "reject" else None


class _VALimit(Rule):
    """Reject when a VA error exceeds the limit that applies to the target."""
    limit: ClassVar[str]     # key in Thresholds.va_limits()
    column: ClassVar[str]    # the score compared with it
    needs = "va"

    @classmethod
    def build(cls, filters):
        bands = any(cls.limit in b.va_limits() for b in filters.failure_bands)
        return cls() if cls.limit in filters.va_limits() or bands else None

    def check(self, subject, scores):
        limit = subject.limits.get(self.limit)
        if limit is None or subject.target.is_neutral:
            return None
        value = getattr(scores, self.column)
        if is_number(value):
            return self.reason if value > limit else None
        return self._undefined(subject, scores, value)

    def _undefined(self, subject, scores, value):
        return None


class VADirection(_VALimit):
    reason, short, meaning = "va_direction", "DIR", "predicted direction further than max_direction_error_deg"
    field, limit, column = "max_direction_error_deg", "va_direction", "direction_error_deg"

    def _undefined(self, subject, scores, value):
        # A prediction at the exact origin has no direction: the label cannot be confirmed.
        if value is UNDEFINED and subject.target.intensity > 0 and is_number(scores.pred_valence):
            return self.reason
        return None


class VADistance(_VALimit):
    reason, short, meaning = "va_distance", "DIST", "predicted VA point further than max_distance"
    field, limit, column = "max_distance", "va_distance", "distance_error"


class VAMagnitude(_VALimit):
    reason, short, meaning = "va_magnitude", "MAG", "predicted intensity further than max_magnitude_error"
    field, limit, column = "max_magnitude_error", "va_magnitude", "magnitude_error"


class VADisagreement(_Threshold):
    """The estimators of models.va (a list) disagree about the image: its label is uncertain
    whichever of them is right."""
    reason, short, meaning = "va_disagreement", "DIS", "VA estimators further apart than filters.max_va_disagreement"
    field, needs, score, neutral_too = "max_va_disagreement", "va_consensus", "va_disagreement", False

    def check(self, subject, scores):
        if subject.target.is_neutral:
            return None
        value = scores.va_disagreement
        return self.reason if is_number(value) and value > self.threshold else None


# The order of reasons in a rejected row.
RULES: list[type[Rule]] = [NonFinite, LowQuality, IdentityDrift, FailureBand, VADirection, VADistance, VAMagnitude,
                           VADisagreement]


def register(rule: type[Rule]) -> type[Rule]:
    """Add a rule (usable as a class decorator). Its reason must be new."""
    if any(r.reason == rule.reason for r in RULES):
        raise ValueError(f"a rule with reason {rule.reason!r} is already registered")
    RULES.append(rule)
    return rule


def unregister(rule: type[Rule]) -> None:
    RULES.remove(rule)


def reasons() -> dict[str, type[Rule]]:
    """Reason name -> rule, in reason order (README's table and the report's legend)."""
    return {r.reason: r for r in RULES}


def short_label(reason: str) -> str:
    rule = reasons().get(reason)
    return rule.short if rule else reason[:4]


NEEDS_MESSAGES = {
    "quality": "needs models.quality (e.g. {kind: builtin})",
    "embedding": "needs models.quality with output: embedding (identity is the embedding's direction)",
    "va": "needs models.va (e.g. {kind: builtin})",
    "va_consensus": "needs two or more VA estimators (models.va as a list)",
}


def check_models(filters: Filters, has: dict[str, bool]) -> tuple[tuple, str] | None:
    """(field path, message) of the first filter whose model is missing; has: quality/embedding/va."""
    for rule in RULES:
        if rule.field is not None and rule.needs and getattr(filters, rule.field, None) is not None \
                and not has.get(rule.needs):
            return ("filters", rule.field), NEEDS_MESSAGES[rule.needs]
    if not has.get("va"):
        for i, band in enumerate(filters.failure_bands):
            if band.action == "verify":
                return ("filters", "failure_bands", i, "action"), "verify needs models.va"
    return None


def decisions_digest(recipe) -> str:
    """What decides a rendered sample's fate and which images a shard keeps: the filters and
    output.keep_rejected. Markers record it; a committed shard with another is re-decided from
    its stored scores instead of being rendered again."""
    import hashlib
    import json

    inputs = {"filters": recipe.filters.model_dump(mode="json"), "keep_rejected": recipe.output.keep_rejected}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def surplus_digest(keys) -> str:
    """Markers record which of a shard's samples are over the quota ("" when none)."""
    import hashlib

    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16] if keys else ""


# ------------------------------------------------------------------------------------------------ decider


@dataclass(frozen=True)
class Verdict:
    status: str
    reasons: tuple[str, ...] = ()


class Decider:
    def __init__(self, filters: Filters):
        self.filters = filters
        self.rules = [rule for cls in RULES if (rule := cls.build(filters)) is not None]

    def band_of(self, target) -> Band | None:
        """The most severe failure band containing the target's direction (None for neutral)."""
        if target.angle_deg is None:
            return None
        hits = [b for b in self.filters.failure_bands if circumplex.in_band(target.angle_deg, b.from_deg, b.to_deg)]
        return max(hits, key=lambda b: _SEVERITY[b.action], default=None)

    def before_generation(self, target) -> Verdict | None:
        """A verdict that needs no image (skip bands), else None: generate it."""
        band = self.band_of(target)
        if band is not None and band.action == "skip":
            return Verdict(SKIPPED, (FailureBand.reason,))
        return None

    def after_measurement(self, target, scores: Scores, finite_image: bool) -> Verdict:
        band = self.band_of(target)
        limits = self.filters.va_limits()
        if band is not None and band.action == "verify" and band.va_limits():
            limits = band.va_limits()  # the band's own (usually stricter) limits replace the global ones
        subject = Subject(target, band, limits, finite_image)
        found = tuple(reason for rule in self.rules if (reason := rule.check(subject, scores)) is not None)
        return Verdict(REJECTED, found) if found else Verdict(ACCEPTED)


__all__ = ["ACCEPTED", "REJECTED", "SKIPPED", "Band", "Decider", "Filters", "NON_FINITE", "RULES", "Rule",
           "Subject", "Thresholds", "Verdict", "check_models", "reasons", "register", "short_label", "unregister"]
