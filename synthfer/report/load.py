"""Read one build output into the frame every report table and plot is computed from.

The scores come straight from the manifest's columns, which the assess stage filled with
`synthfer.metrics`; the only derived quantity (signed direction error) is computed with the same
module, so a report cell and a filter decision can never disagree. Group labels (direction,
intensity, failure band) are worked out once per distinct target, not per row: a manifest has
at most a few hundred targets but may have millions of rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from synthfer import circumplex, metrics
from synthfer.errors import OutputError, UsageError
from synthfer.io.folder import OutputFolder, open_folder
from synthfer.io.layout import Layout, layout_of
from synthfer.io.lock import probe
from synthfer.io.manifest import read_manifest

NEUTRAL, POINTS = "neutral", "points"
ANCHOR = " anchor"   # "disgust anchor": the direction group of a class anchor off the named directions
# surplus: passed every filter but over its quota, so kept out of the training set
STATUSES = ("accepted", "surplus", "rejected", "skipped")
# The paper's failure region (bored .. serene), shown when the recipe set no bands of its own so
# the protocol report still answers "is the known weak region still weak?".
PAPER_BAND = (242.0, 329.0)
_ANGLE_TOLERANCE_DEG = 0.05

# Manifest columns the report reads; the rest (hashes, seeds, fingerprints) would only cost time.
_COLUMNS = ["key", "shard", "identity", "split", "target", "target_angle_deg", "target_intensity",
            "target_valence", "target_arousal", "class", "status", "quality", "identity_similarity",
            "pred_valence", "pred_arousal", "pred_angle_deg", "width", "attempts"] + list(metrics.ERROR_COLUMNS)


@dataclass(frozen=True)
class BandSpec:
    label: str          # "242-329": the range only, so a filtered build and an unfiltered one
                        # (whose band is the paper's reference region) line up in --compare
    from_deg: float
    to_deg: float
    action: str         # skip | reject | verify | reference (the paper's region, no filter set)


@dataclass
class Run:
    """One build output, ready for the tables, plots and sheets."""
    folder: OutputFolder                     # the build output (local folder or URL)
    name: str
    frame: pd.DataFrame                      # one row per manifest row, plus group columns
    reason_rows: np.ndarray                  # row positions in `frame` ...
    reason_values: np.ndarray                # ... and one reject/skip reason each (a row may repeat)
    bands: list[BandSpec] = field(default_factory=list)
    recipe: dict | None = None               # run.json's resolved recipe, None when run.json is missing
    notes: list[str] = field(default_factory=list)
    layout: Layout | None = None             # the output's format (1 or 2)
    va_each: np.ndarray | None = None        # [K, rows, 2] each VA estimator's prediction (K > 1 only)
    va_names: list[str] = field(default_factory=list)  # their labels: va[0] file name, ...

    @property
    def directions(self) -> list[str]:
        """Direction groups present, in the circumplex table's order, then points, then neutral."""
        return list(self.frame["direction"].cat.categories)


def load_run(out_dir: str | Path | OutputFolder) -> Run:
    folder = out_dir if isinstance(out_dir, OutputFolder) else open_folder(out_dir)
    layout = layout_of(folder)
    try:
        if folder.is_local and not folder.is_dir(""):
            raise UsageError(f"{folder.location}: no such folder")
        if not folder.exists(layout.manifest):
            if folder.is_dir(layout.marker_dir):  # shards were committed, the build stopped before finalizing
                probe(folder, layout)   # or it is still running: exit 75, "another build holds the lock"
                raise UsageError(f"{folder.location}: has no {layout.manifest} yet: the build did not finish; "
                                 f"run the same synthfer build again, then report")
            raise UsageError(f"{folder.location}: has no {layout.manifest}; is it a synthfer build output?")
        table = read_manifest(folder, layout.manifest, _COLUMNS + ["reject_reasons", "va_disagreement",
                                                                   "pred_valence_each", "pred_arousal_each"],
                              fill_missing=True)
    except (OSError, ValueError, pa.ArrowException) as err:
        raise OutputError(f"{folder.display(layout.manifest)}: cannot read the manifest: "
                          f"{str(err).splitlines()[0]}") from None
    recipe, notes = _read_recipe(folder, layout.run_json)
    bands = _bands(recipe)
    if recipe is not None and not recipe.get("filters", {}).get("failure_bands"):
        notes.append(f"No failure bands in the recipe; the band tables use the paper's failure region "
                     f"{PAPER_BAND[0]:g}-{PAPER_BAND[1]:g} deg for reference.")
    elif recipe is None:
        notes.append("run.json missing or unreadable: failure bands unknown, the paper's region is used.")

    frame = table.select(_COLUMNS + ["va_disagreement"]).to_pandas()
    # renders per sample (correction); outputs older than the column rendered each sample once
    frame["attempts"] = frame["attempts"].astype("float64").where(frame["attempts"].notna(),
                                                                  np.where(frame["status"] == "skipped", 0.0, 1.0))
    va_each, va_names = _estimators(table, recipe)
    _add_groups(frame, bands)
    # signed error: positive = predicted counter-clockwise of the target (bias, not MAE)
    frame["direction_bias_deg"] = metrics.signed_difference(frame["pred_angle_deg"].to_numpy(np.float64),
                                                            frame["target_angle_deg"].to_numpy(np.float64))
    frame["valence_bias"] = frame["pred_valence"] - frame["target_valence"]
    frame["arousal_bias"] = frame["pred_arousal"] - frame["target_arousal"]
    # "measured": generated and VA-predicted (both values). Skipped rows never had an image.
    frame["measured"] = ((frame["status"] != "skipped").to_numpy() & frame["pred_valence"].notna().to_numpy()
                         & frame["pred_arousal"].notna().to_numpy())
    frame["class"] = frame["class"].fillna("")

    reasons = table["reject_reasons"]
    rows = pc.list_parent_indices(reasons).to_numpy(zero_copy_only=False) if table.num_rows else np.empty(0, int)
    values = pc.list_flatten(reasons).to_numpy(zero_copy_only=False) if table.num_rows else np.empty(0, object)
    name = (recipe or {}).get("name") or folder.location.rstrip("/").rsplit("/", 1)[-1]
    if table.num_rows and not frame["measured"].any():
        notes.append("No sample has a VA prediction (models.va not set?): the error tables are empty.")
    return Run(folder, name, frame, rows.astype(np.int64), values.astype(object), bands, recipe, notes, layout,
               va_each, va_names)


def _estimators(table: pa.Table, recipe: dict | None) -> tuple[np.ndarray | None, list[str]]:
    """Each VA estimator's predictions as [K, rows, 2] (NaN where missing), when there are several."""
    blocks = ((recipe or {}).get("models") or {}).get("va")
    columns = [table[c].to_pylist() for c in ("pred_valence_each", "pred_arousal_each")]
    k = max((len(values or ()) for values in columns[0]), default=0)
    if k < 2:
        return None, []
    out = np.full((k, table.num_rows, 2), np.nan)
    for c, column in enumerate(columns):
        for r, values in enumerate(column):
            for i, v in enumerate(values or ()):
                out[i, r, c] = np.nan if v is None else v
    names = []
    for i in range(k):
        block = blocks[i] if isinstance(blocks, list) and i < len(blocks) and isinstance(blocks[i], dict) else {}
        label = block.get("preset") or Path(str(block.get("path") or block.get("kind") or "")).name
        names.append(f"va[{i}] {label}".rstrip())
    return out, names


def _read_recipe(folder: OutputFolder, rel: str) -> tuple[dict | None, list[str]]:
    try:
        info = json.loads(folder.read_bytes(rel).decode("utf-8"))
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError) as err:
        return None, [f"run.json unreadable ({err}); recipe details left out."]
    recipe = info.get("recipe") if isinstance(info, dict) else None
    counts = info.get("counts") if isinstance(info, dict) else None
    notes = []
    if isinstance(counts, dict) and counts.get("complete") is False:
        notes.append(f"Partial build: {counts.get('committed_shards', '?')} of {counts.get('planned_shards', '?')} "
                     f"shards committed; these tables cover only those (run the build again to finish it).")
    return (recipe if isinstance(recipe, dict) else None), notes


def _bands(recipe: dict | None) -> list[BandSpec]:
    raw = ((recipe or {}).get("filters") or {}).get("failure_bands") or []
    out = []
    for b in raw:
        try:
            lo, hi, action = float(b["from_deg"]), float(b["to_deg"]), str(b.get("action", "verify"))
        except (KeyError, TypeError, ValueError):
            continue  # a hand-edited run.json; the band tables simply lose that band
        label = f"{lo:g}-{hi:g}"
        out.append(BandSpec(label if all(o.label != label for o in out) else f"{label} {action}", lo, hi, action))
    if not out:
        out.append(BandSpec(f"{PAPER_BAND[0]:g}-{PAPER_BAND[1]:g}", *PAPER_BAND, "reference"))
    return out


def direction_of(target: str, angle: float | None) -> str:
    """The named direction a target belongs to: the one its key names or its angle is (within
    0.05 deg); raw points, class anchors elsewhere and anything unnamed are "points", the
    unedited identity "neutral". (_add_groups then gives a class anchor its own group.)"""
    if target == NEUTRAL or angle is None or not np.isfinite(angle):
        return NEUTRAL
    if target.startswith("va-"):
        return POINTS
    for e in circumplex.emotions():
        if circumplex.angular_difference(e.angle_deg, angle) <= _ANGLE_TOLERANCE_DEG:
            return e.name
    return POINTS


def intensity_label(s: float, target: str = "") -> str:
    """The intensity group of a target: "0 (neutral)" for the unedited identity only, otherwise
    the value to 4 decimals, so a raw point at 0.004 never joins the neutral row."""
    if target == NEUTRAL:
        return "0 (neutral)"
    return f"{round(float(s), 4):g}" if np.isfinite(s) else "n/a"


def _add_groups(frame: pd.DataFrame, bands: list[BandSpec]) -> None:
    """direction, intensity and in_band_<i> columns, computed per distinct target and mapped."""
    order = {e.name: i for i, e in enumerate(circumplex.emotions())}
    angles = {e.name: e.angle_deg for e in circumplex.emotions()}
    uniq = frame[["target", "target_angle_deg", "class"]].drop_duplicates("target")
    direction, in_band = {}, {i: {} for i in range(len(bands))}
    anchors: dict[str, float] = {}   # a class's anchor off the named directions: its own group
    for target, angle, cls in uniq.itertuples(index=False):
        angle = None if pd.isna(angle) else float(angle)
        direction[target] = direction_of(target, angle)
        if direction[target] == POINTS and cls and not target.startswith("va-"):
            # the key without its intensity: "disgust" for one anchor, "mixed-2" for a class's second
            direction[target] = f"{target.rsplit('-', 1)[0]}{ANCHOR}"
            anchors.setdefault(direction[target], angle)
        for i, b in enumerate(bands):
            # circumplex.in_band is what the decide stage uses, wrap-around through 0 included
            in_band[i][target] = angle is not None and circumplex.in_band(angle, b.from_deg, b.to_deg)
    present = set(direction.values())
    cats = (sorted((d for d in present if d in order), key=order.get) + sorted(anchors, key=anchors.get)
            + [d for d in (POINTS, NEUTRAL) if d in present])
    angles.update(anchors)
    frame["direction"] = pd.Categorical(frame["target"].map(direction), categories=cats, ordered=True)
    frame["direction_angle"] = frame["target"].map({t: angles.get(d, np.nan) for t, d in direction.items()})
    per_target = {t: intensity_label(s, t) for t, s in
                  frame[["target", "target_intensity"]].drop_duplicates("target").itertuples(index=False)}
    labels = frame["target"].map(per_target)
    levels = sorted(labels.unique(), key=lambda s: -1.0 if s.endswith("(neutral)") else
                    float("inf") if s == "n/a" else float(s))
    frame["intensity"] = pd.Categorical(labels, categories=levels, ordered=True)
    for i in range(len(bands)):
        frame[f"in_band_{i}"] = frame["target"].map(in_band[i]).fillna(False).astype(bool)
