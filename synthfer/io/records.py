"""The per-sample records: `Scores` (what the models measured) and `Row` (one manifest row).

The manifest's columns and its Arrow schema are derived from these dataclasses (io/manifest.py),
so a score is named in exactly one place. A value that is not a number says why in its type:

* `NOT_MEASURED`: no model for it in this recipe (or no image: skipped samples);
* `UNDEFINED`: no such quantity for this sample (the direction of the origin);
* `NON_FINITE`: the model gave NaN or infinity (the sample is rejected as `non_finite`).

All three are stored as null in the manifest; the filters tell them apart.
"""

from __future__ import annotations

import enum
import math
import typing
from dataclasses import dataclass, field, fields, replace


class Missing(enum.Enum):
    NOT_MEASURED = "not_measured"
    UNDEFINED = "undefined"
    NON_FINITE = "non_finite"


NOT_MEASURED, UNDEFINED, NON_FINITE = Missing.NOT_MEASURED, Missing.UNDEFINED, Missing.NON_FINITE
Score = typing.Union[float, Missing]


def is_number(value: Score) -> bool:
    return isinstance(value, float)


def score(value) -> Score:
    """A model output as a Score: finite floats stay, NaN/inf become NON_FINITE."""
    value = float(value)
    return value if math.isfinite(value) else NON_FINITE


@dataclass(frozen=True)
class Scores:
    """Everything measured about one generated image. Field names are manifest column names."""
    quality: Score = NOT_MEASURED               # on models.quality.quality_scale
    identity_similarity: Score = NOT_MEASURED   # cosine to the identity's neutral embedding
    pred_valence: Score = NOT_MEASURED          # VA estimator, clamped to [-1, 1]
    pred_arousal: Score = NOT_MEASURED
    pred_angle_deg: Score = NOT_MEASURED        # UNDEFINED when predicted exactly at the origin
    pred_intensity: Score = NOT_MEASURED
    direction_error_deg: Score = NOT_MEASURED   # UNDEFINED for targets at the origin
    magnitude_error: Score = NOT_MEASURED
    valence_error: Score = NOT_MEASURED
    arousal_error: Score = NOT_MEASURED
    distance_error: Score = NOT_MEASURED
    # Several VA estimators (models.va a list): pred_valence/arousal are their mean, and
    va_disagreement: Score = NOT_MEASURED       # the largest distance between two of their predictions
    pred_valence_each: tuple = ()               # each estimator's valence (clamped; None if non-finite),
    pred_arousal_each: tuple = ()               # in models.va order; empty without models.va

    @property
    def non_finite(self) -> bool:
        return any(getattr(self, name) is NON_FINITE for name in NUMBER_SCORES)

    def number(self, name: str) -> float | None:
        value = getattr(self, name)
        return value if is_number(value) else None

    def columns(self) -> dict[str, float | list | None]:
        out: dict = {name: self.number(name) for name in NUMBER_SCORES}
        out.update({name: list(getattr(self, name)) for name in LIST_SCORES})
        return out

    def flags(self) -> list[str]:
        """`name:undefined` / `name:non_finite` for each score that is null for one of those
        reasons (a null without a flag was not measured), so stored rows can be re-decided."""
        return [f"{name}:{getattr(self, name).value}" for name in NUMBER_SCORES
                if getattr(self, name) in (UNDEFINED, NON_FINITE)]

    @classmethod
    def from_columns(cls, row: dict, flags: list[str] | None = None) -> "Scores":
        """The Scores a manifest row (score columns + score_flags) was written from."""
        missing = {name: Missing(kind) for name, _, kind in (f.partition(":") for f in (flags or []))}
        values: dict = {name: float(row[name]) if row.get(name) is not None else missing.get(name, NOT_MEASURED)
                        for name in NUMBER_SCORES}
        values.update({name: tuple(row.get(name) or ()) for name in LIST_SCORES})
        return cls(**values)

    def with_(self, **values) -> "Scores":
        return replace(self, **values)


SCORE_COLUMNS = tuple(f.name for f in fields(Scores))
LIST_SCORES = ("pred_valence_each", "pred_arousal_each")             # list<float64> columns
NUMBER_SCORES = tuple(n for n in SCORE_COLUMNS if n not in LIST_SCORES)  # float64 columns


@dataclass(frozen=True)
class EditRecord:
    """How a sample's image was edited: the request it was rendered with and, with correction,
    every attempt (its VA distance to the original target and what the estimator read)."""
    requested: tuple | None = None   # (valence, arousal) of the kept render; None when not edited
    attempts: int = 0                # renders of this sample (0: none, e.g. skipped)
    errors: tuple = ()               # correction only: each attempt's VA distance to the target (None: unusable)
    pred_valence: tuple = ()         # correction only: each attempt's predicted valence, arousal
    pred_arousal: tuple = ()

    def columns(self) -> dict:
        return {"requested_valence": None if self.requested is None else float(self.requested[0]),
                "requested_arousal": None if self.requested is None else float(self.requested[1]),
                "attempts": self.attempts, "attempt_errors": list(self.errors),
                "attempt_pred_valence": list(self.pred_valence), "attempt_pred_arousal": list(self.pred_arousal)}

    @classmethod
    def from_columns(cls, row: dict) -> "EditRecord":
        v, a = row.get("requested_valence"), row.get("requested_arousal")
        return cls(None if v is None else (v, a), int(row.get("attempts") or 0), tuple(row.get("attempt_errors") or ()),
                   tuple(row.get("attempt_pred_valence") or ()), tuple(row.get("attempt_pred_arousal") or ()))


EDIT_COLUMNS = (("requested_valence", "float64"), ("requested_arousal", "float64"), ("attempts", "int32"),
                ("attempt_errors", "list<float64>"), ("attempt_pred_valence", "list<float64>"),
                ("attempt_pred_arousal", "list<float64>"))


def _arrow(kind: str, column: str | None = None):
    return field(metadata={"arrow": kind, "column": column})


@dataclass(frozen=True)
class Row:
    """One manifest row: a planned sample, its status and every reason, its scores and image."""
    key: str                                     # {identity:07d}_{target}
    shard: int = _arrow("int32")
    identity: int = _arrow("int64")
    identity_seed: int = _arrow("int64")
    split: str = _arrow("string")
    target: str = _arrow("string")
    target_angle_deg: float | None = _arrow("float64")   # null for neutral
    target_intensity: float = _arrow("float64")
    target_valence: float = _arrow("float64")
    target_arousal: float = _arrow("float64")
    class_name: str = _arrow("string", "class")  # the target's class; "" without targets.classes
    class_id: int = _arrow("int32")              # its index in targets.classes; -1 without classes
    status: str = _arrow("string")               # accepted | rejected | skipped | surplus (over quota)
    reject_reasons: tuple = _arrow("list<string>")
    scores: Scores = _arrow("scores")            # flattened into SCORE_COLUMNS
    score_flags: tuple = _arrow("list<string>")  # why a null score is null (Scores.flags)
    edit: EditRecord = _arrow("edit")            # flattened into EDIT_COLUMNS
    width: int | None = _arrow("int32")          # null when no image was written
    height: int | None = _arrow("int32")
    image_sha256: str | None = _arrow("string")
    recipe_fingerprint: str = _arrow("string")

    def columns(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("scores", "edit"):
                out.update(value.columns())
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.metadata.get("column") or f.name] = value
        return out


def arrow_schema():
    """The manifest's schema (pyarrow), in Row's field order with the scores in place of `scores`."""
    import pyarrow as pa

    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
             "list<string>": pa.list_(pa.string()), "list<float64>": pa.list_(pa.float64())}
    out = []
    for f in fields(Row):
        kind = f.metadata.get("arrow", "string")
        if kind == "scores":
            out += [(name, pa.list_(pa.float64()) if name in LIST_SCORES else pa.float64())
                    for name in SCORE_COLUMNS]
        elif kind == "edit":
            out += [(name, types[t]) for name, t in EDIT_COLUMNS]
        else:
            out.append((f.metadata.get("column") or f.name, types[kind]))
    return pa.schema(out)
