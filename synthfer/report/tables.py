"""Aggregation: mean and SD of the protocol's errors per direction, intensity, failure band and
overall, over measured and over accepted samples, with acceptance counts and reject reasons.

Everything is a pandas groupby over whole columns; the only Python loops run over groups
(at most a few dozen), never over rows. SD is the population SD (ddof=0, numpy's default), so a
group of one sample reads "x ± 0" rather than an empty cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthfer import metrics
from synthfer.report.load import ANCHOR, NEUTRAL, POINTS, STATUSES, Run

# (column, table header, decimals): the paper's columns, in its order.
PAPER_COLUMNS = (
    ("direction_error_deg", "dir MAE (deg)", 1),
    ("magnitude_error", "mag MAE", 2),
    ("valence_error", "val MAE", 2),
    ("arousal_error", "arous MAE", 2),
    ("distance_error", "dist MAE", 2),
)
assert tuple(c for c, _, _ in PAPER_COLUMNS) == metrics.ERROR_COLUMNS
# Signed means (bias) and the other scores: in metrics.csv, and the direction bias in the tables.
EXTRA_COLUMNS = ("direction_bias_deg", "valence_bias", "arousal_bias", "quality", "identity_similarity", "attempts")
VALUE_COLUMNS = metrics.ERROR_COLUMNS + EXTRA_COLUMNS
GROUPINGS = ("class", "direction", "intensity", "band", "overall")
SUBSETS = ("measured", "accepted")
OUTSIDE_BANDS, ALL, NAMED = "outside bands", "all", "named directions"


def _layers(run: Run, grouping: str) -> list[pd.Series]:
    """Label series over all rows (NaN = row not in any group of this layer). A row belongs to one
    group per layer; bands may overlap, so each band is a layer of its own."""
    f = run.frame
    if grouping == "class":  # only when the build has classes
        return [f["class"].where(f["class"] != "")] if (f["class"] != "").any() else []
    if grouping in ("direction", "intensity"):
        return [f[grouping]]
    if grouping == "band":
        inside = [f[f"in_band_{i}"].to_numpy() for i in range(len(run.bands))]
        layers = [pd.Series(np.where(m, b.label, None), index=f.index) for m, b in zip(inside, run.bands)]
        # rows with a direction only: neutral (and anything at the origin) is in no band, nor outside one
        directed = f["target_angle_deg"].notna().to_numpy()
        outside = (~np.logical_or.reduce(inside) if inside else np.ones(len(f), bool)) & directed
        return layers + [pd.Series(np.where(outside, OUTSIDE_BANDS, None), index=f.index)]
    if grouping == "overall":
        named = (~f["direction"].isin([POINTS, NEUTRAL]) & ~f["direction"].astype(str).str.endswith(ANCHOR)).to_numpy()
        return [pd.Series(ALL, index=f.index), pd.Series(np.where(named, NAMED, None), index=f.index)]
    raise ValueError(grouping)


def _group_order(layer: pd.Series) -> list:
    if isinstance(layer.dtype, pd.CategoricalDtype):
        return [c for c in layer.cat.categories if (layer == c).any()]
    return list(pd.unique(layer.dropna()))


def metrics_frame(run: Run) -> pd.DataFrame:
    """The tidy table behind metrics.csv: one row per (subset, grouping, group)."""
    f = run.frame
    reason_names = sorted(set(run.reason_values.tolist()))
    out = []
    for grouping in GROUPINGS:
        for layer in _layers(run, grouping):
            groups = _group_order(layer)
            if not groups:
                continue
            status = pd.crosstab(layer, f["status"]).reindex(index=groups, columns=list(STATUSES), fill_value=0)
            reasons = pd.crosstab(layer.to_numpy()[run.reason_rows], run.reason_values) if len(run.reason_rows) \
                else pd.DataFrame()
            reasons = reasons.reindex(index=groups, columns=reason_names, fill_value=0)
            for subset in SUBSETS:
                mask = f["measured"].to_numpy()
                if subset == "accepted":
                    mask = mask & (f["status"] == "accepted").to_numpy()
                g = f.loc[mask, list(VALUE_COLUMNS)].groupby(layer[mask], observed=True, sort=False)
                block = pd.DataFrame(index=pd.Index(groups, name="group"))
                block["n"] = g.size().reindex(groups, fill_value=0).astype(np.int64)
                mean, sd = g.mean().reindex(groups), g.std(ddof=0).reindex(groups)
                count = g.count().reindex(groups, fill_value=0)
                for col in VALUE_COLUMNS:
                    block[f"{col}_mean"], block[f"{col}_sd"] = mean[col], sd[col]
                    block[f"{col}_n"] = count[col].astype(np.int64)  # the rows a mean is over
                planned = status.sum(axis=1)
                for s in STATUSES:
                    block[s] = status[s]
                block["planned"] = planned
                block["acceptance_rate"] = (status["accepted"] / planned.where(planned > 0)).astype(np.float64)
                for r in reason_names:
                    block[f"reason_{r}"] = reasons[r]
                block.insert(0, "angle_deg", [_angle(run, grouping, g) for g in groups])
                block = block.reset_index()
                block.insert(0, "grouping", grouping)
                block.insert(0, "subset", subset)
                out.append(block)
    if not out:
        return pd.DataFrame(columns=["subset", "grouping", "group", "angle_deg", "n"])
    frame = pd.concat(out, ignore_index=True)
    # subset-major order: all "measured" tables, then all "accepted" ones, like metrics.md
    frame["_s"] = frame["subset"].map({s: i for i, s in enumerate(SUBSETS)})
    return frame.sort_values("_s", kind="stable").drop(columns="_s").reset_index(drop=True)


def _angle(run: Run, grouping: str, group) -> float:
    """A direction group's angle: a named direction's, or a class anchor's (nan otherwise)."""
    if grouping != "direction":
        return np.nan
    rows = run.frame.loc[run.frame["direction"] == group, "direction_angle"]
    return float(rows.iloc[0]) if len(rows) else np.nan


def compare_frame(this: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """metrics_frame of this run next to another's: `<col>_other` and `<col>_delta` (this - other).
    Groups present in only one run keep their row with the other side empty."""
    keys = ["subset", "grouping", "group"]
    values = ["n"] + [f"{c}_mean" for c in VALUE_COLUMNS] + ["planned", "accepted", "acceptance_rate"]
    a = this[keys + ["angle_deg"] + values]
    b = other[keys + values].rename(columns={c: f"{c}_other" for c in values})
    merged = a.merge(b, on=keys, how="outer", sort=False)
    # keep this run's order, then the other run's extra groups
    order = {k: i for i, k in enumerate(map(tuple, pd.concat([this[keys], other[keys]]).to_numpy()))}
    merged["_o"] = [order[tuple(k)] for k in merged[keys].to_numpy()]
    merged = merged.sort_values("_o", kind="stable").drop(columns="_o").reset_index(drop=True)
    for c in values:
        merged[f"{c}_delta"] = merged[c].astype(np.float64) - merged[f"{c}_other"].astype(np.float64)
    return merged


# ---- rendering into sections shared by metrics.md and report.html ---------------------------------

@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def mean_sd(mean: float, sd: float, decimals: int) -> str:
    """The paper's cell format, "10.2 ± 8.3"; an en dash where nothing was measured."""
    if mean is None or not np.isfinite(mean):
        return "–"
    return f"{mean:.{decimals}f} ± {sd:.{decimals}f}"


def _num(x: float, decimals: int, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


_TITLES = {"class": "Per class", "direction": "Per direction", "intensity": "Per intensity",
           "band": "Per failure band", "overall": "Overall"}
_SUBSET_TEXT = {"measured": "all measured samples (generated and VA-predicted; skipped rows excluded)",
                "accepted": "accepted samples only (what the training shards hold)"}


def _label_header(grouping: str) -> list[str]:
    return ["direction", "angle"] if grouping == "direction" else [grouping if grouping != "overall" else "set"]


def _label_cells(row) -> list[str]:
    if row["grouping"] == "direction":
        return [str(row["group"]), _num(row["angle_deg"], 1)]
    return [str(row["group"])]


def band_note(bands) -> str:
    """What the band rows mean: each band's range and the recipe's action for it."""
    text = ", ".join(f"{b.label}: {b.from_deg:g} to {b.to_deg:g} deg counter-clockwise, "
                     + ("the paper's failure region (no band in the recipe)" if b.action == "reference"
                        else f"action {b.action}") for b in bands)
    return f" Bands: {text}." if text else ""


def _parts(frame: pd.DataFrame, grouping: str):
    """(subset, rows of that grouping and subset) for every subset that has rows."""
    for subset in SUBSETS:
        part = frame[(frame["grouping"] == grouping) & (frame["subset"] == subset)]
        if not part.empty:
            yield subset, part


def sections(frame: pd.DataFrame, reason_names: list[str], bands=()) -> list[Section]:
    """The metric tables (paper format) and the acceptance tables, one pair per grouping."""
    out = []
    for grouping in GROUPINGS:
        for subset, part in _parts(frame, grouping):
            header = _label_header(grouping) + ["n"] + [h for _, h, _ in PAPER_COLUMNS] + ["dir bias (deg)"]
            rows = [_label_cells(r) + [str(int(r["n"]))]
                    + [mean_sd(r[f"{c}_mean"], r[f"{c}_sd"], d) + _over(r, c) for c, _, d in PAPER_COLUMNS]
                    + [_num(r["direction_bias_deg_mean"], 1, signed=True)] for _, r in part.iterrows()]
            out.append(Section(f"{_TITLES[grouping]}: {subset}", header, rows,
                               f"Mean ± SD over {_SUBSET_TEXT[subset]}. Direction error is not defined at "
                               f"intensity 0 (neutral). dir bias: mean signed error, + = counter-clockwise."
                               + (band_note(bands) if grouping == "band" else "")))
        part = frame[(frame["grouping"] == grouping) & (frame["subset"] == SUBSETS[0])]
        if part.empty:
            continue
        header = _label_header(grouping) + ["planned", *STATUSES, "acceptance", "reasons"]
        rows = [_label_cells(r) + [str(int(r[c])) for c in ("planned",) + STATUSES] + [_pct(r["acceptance_rate"])]
                + [_reasons(r, reason_names)] for _, r in part.iterrows()]
        out.append(Section(f"{_TITLES[grouping]}: acceptance", header, rows,
                           "All planned rows. A rejected row lists every failing reason, so reasons can add "
                           "up to more than the rejected count."))
    return out


def _over(row, column: str) -> str:
    """" (n=k)" when a mean is over fewer rows than the group's n (e.g. no direction at the origin)."""
    k = int(row[f"{column}_n"])
    return f" (n={k})" if k != int(row["n"]) and np.isfinite(row[f"{column}_mean"]) else ""


def class_split_section(run: Run) -> Section | None:
    """Accepted (and surplus) per class (per target without classes) and split: the training set's
    balance at a glance."""
    f = run.frame
    if f.empty:
        return None
    unit = f["class"].where(f["class"] != "", f["target"])
    word = "class" if (f["class"] != "").any() else "target"
    splits = [s for s in ("train", "val", "test") if (f["split"] == s).any()]
    accepted = pd.crosstab(unit[f["status"] == "accepted"], f.loc[f["status"] == "accepted", "split"])
    surplus = (f["status"] == "surplus").groupby(unit).sum()
    planned = unit.value_counts()
    rows = []
    for u in pd.unique(unit):
        cells = [str(int(accepted.loc[u, s])) if u in accepted.index and s in accepted.columns else "0" for s in splits]
        rows.append([str(u)] + cells + [str(int(surplus.get(u, 0))), str(int(planned[u]))])
    return Section(f"Accepted per {word} and split", [word] + splits + ["surplus", "planned"], rows,
                   "Accepted samples are the training set; surplus ones passed the filters but are over the "
                   "quota and stay out of the shards.")


def angle_intensity_section(run: Run) -> Section | None:
    """The paper's cells: direction error (mean ± SD over measured samples) per named direction
    (rows, by angle) and intensity (columns)."""
    f = run.frame
    m = f[f["measured"] & ~f["direction"].isin([NEUTRAL, POINTS]) & f["direction_error_deg"].notna()]
    if m.empty:
        return None
    g = m.groupby(["direction", "intensity"], observed=True)["direction_error_deg"]
    mean, sd, n = g.mean(), g.std(ddof=0), g.size()
    levels = [lv for lv in m["intensity"].cat.categories if (m["intensity"] == lv).any()]
    rows = []
    for d in [c for c in m["direction"].cat.categories if (m["direction"] == c).any()]:
        cells = [f"{mean[(d, lv)]:.1f} ± {sd[(d, lv)]:.1f} ({n[(d, lv)]})" if (d, lv) in mean.index else "–"
                 for lv in levels]
        rows.append([str(d), _num(_angle(run, "direction", d), 1)] + cells)
    return Section("Direction error per direction and intensity", ["direction", "angle"]
                   + [f"intensity {lv}" for lv in levels], rows,
                   "Mean ± SD (n) of the direction error in degrees over measured samples, as the paper's "
                   "angle x intensity cells.")


def estimator_section(run: Run) -> Section | None:
    """Several VA estimators (models.va a list): each one's protocol errors on the same edited
    images, beside their mean's, and how far each sits from that mean."""
    if run.va_each is None:
        return None
    f = run.frame
    keep = ((f["status"] != "skipped") & (f["target_intensity"] > 0) & (f["target"] != NEUTRAL)).to_numpy()
    tv, ta = f["target_valence"].to_numpy(np.float64)[keep], f["target_arousal"].to_numpy(np.float64)[keep]
    consensus = np.stack([f["pred_valence"].to_numpy(np.float64)[keep], f["pred_arousal"].to_numpy(np.float64)[keep]], -1)
    rows = []
    for name, pred in [*zip(run.va_names, run.va_each[:, keep]), ("mean (consensus)", consensus)]:
        err = metrics.va_errors(tv, ta, pred[:, 0], pred[:, 1])
        ok = np.isfinite(pred).all(1)
        d = err["direction_error_deg"][ok & np.isfinite(err["direction_error_deg"])]
        off = np.hypot(*(pred[ok] - consensus[ok]).T)
        rows.append([name, str(int(ok.sum())), mean_sd(float(np.mean(d)) if d.size else np.nan,
                                                       float(np.std(d)) if d.size else np.nan, 1)]
                    + [_num(float(np.sqrt(np.nanmean(err[c][ok] ** 2))) if ok.any() else np.nan, 3)
                       for c in ("valence_error", "arousal_error")]
                    + [_num(float(np.mean(off)) if off.size else np.nan, 3)])
    spread = f["va_disagreement"].to_numpy(np.float64)[keep]
    spread = spread[np.isfinite(spread)]
    note = ("Each estimator on the same edited images (neutral ones left out). Disagreement (largest distance "
            "between two estimators): " + (f"median {np.median(spread):.3f}, 90th percentile "
                                           f"{np.percentile(spread, 90):.3f}." if spread.size else "none measured."))
    return Section("Per estimator", ["estimator", "measured", "direction error deg", "valence RMSE", "arousal RMSE",
                                     "mean distance to the consensus"], rows, note)


def _reasons(row, reason_names: list[str]) -> str:
    parts = [(int(row[f"reason_{r}"]), r) for r in reason_names if row.get(f"reason_{r}", 0)]
    return ", ".join(f"{r} {n}" for n, r in sorted(parts, key=lambda p: (-p[0], p[1]))) or "–"


def compare_sections(merged: pd.DataFrame, this_name: str, other_name: str) -> list[Section]:
    """Side-by-side tables: each cell `other → this (delta)`, means only."""
    out = []
    for grouping in GROUPINGS:
        for subset, part in _parts(merged, grouping):
            header = _label_header(grouping) + ["n"] + [h for _, h, _ in PAPER_COLUMNS] + ["acceptance",
                                                                                            "renders/sample"]
            rows = []
            for _, r in part.iterrows():
                cells = _label_cells(r) + [_arrow(r, "n", 0)]
                cells += [_arrow(r, f"{c}_mean", d) for c, _, d in PAPER_COLUMNS]
                cells.append(_arrow(r, "acceptance_rate", 1, pct=True))
                cells.append(_arrow(r, "attempts_mean", 2))
                rows.append(cells)
            out.append(Section(f"Compare {_TITLES[grouping].lower()}: {subset}", header, rows,
                               f"Each cell: {other_name} → {this_name} (difference {this_name} − {other_name}); "
                               f"means over {_SUBSET_TEXT[subset]}."))
    return out


def _arrow(row, col: str, decimals: int, pct: bool = False) -> str:
    scale = 100.0 if pct else 1.0
    a, b, d = (row.get(f"{col}_other"), row.get(col), row.get(f"{col}_delta"))
    fmt = (lambda x: _num(x * scale if x is not None and np.isfinite(x) else np.nan, decimals)
           + ("%" if pct and x is not None and np.isfinite(x) else ""))
    delta = _num(d * scale if d is not None and np.isfinite(d) else np.nan, decimals, signed=True)
    return f"{fmt(_f(a))} → {fmt(_f(b))} ({delta}{'pp' if pct and delta != '–' else ''})"


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return np.nan


def to_markdown(sections_: list[Section]) -> str:
    lines = []
    for s in sections_:
        lines += [f"## {s.title}", ""]
        if s.note:
            lines += [s.note, ""]
        lines.append("| " + " | ".join(s.header) + " |")
        lines.append("|" + "|".join("---" for _ in s.header) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in s.rows]
        lines.append("")
    return "\n".join(lines)
