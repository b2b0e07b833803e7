"""The report's three plots, drawn with matplotlib's Agg canvas.

No pyplot: figures are built as `Figure` objects on a `FigureCanvasAgg`, so the report neither
switches nor depends on the process-wide backend (a notebook calling write_report keeps its
own), and it is safe off the main thread. Output is deterministic where matplotlib allows:
default style (a user's matplotlibrc is ignored), fixed size and dpi, no Software/date metadata
in the PNG, and a fixed-seed subsample when there are more points than a plot can show.
"""

from __future__ import annotations

import io

import matplotlib.style
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Wedge
import numpy as np
import pandas as pd

from synthfer import circumplex
from synthfer.report.load import NEUTRAL, POINTS, STATUSES, Run

DPI = 100
MAX_POINTS = 20_000   # more dots than this only blacken the plot and cost time
_ACCEPTED, _SURPLUS, _REJECTED, _SKIPPED, _BAND = "#2e7d32", "#81c784", "#c62828", "#9e9e9e", "#ffcc80"
_STATUS_COLOURS = {"accepted": _ACCEPTED, "surplus": _SURPLUS, "rejected": _REJECTED, "skipped": _SKIPPED}
_PNG_METADATA = {"Software": None}  # matplotlib writes its version otherwise


def _subsample(frame: pd.DataFrame, n: int = MAX_POINTS) -> pd.DataFrame:
    if len(frame) <= n:
        return frame
    pick = np.sort(np.random.default_rng(0).choice(len(frame), size=n, replace=False))
    return frame.iloc[pick]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata=_PNG_METADATA)
    return buf.getvalue()


def _band_spans(from_deg: float, to_deg: float) -> list[tuple[float, float]]:
    """A band as intervals on 0..360, split where it wraps through 0 (350 -> 10)."""
    lo, hi = from_deg % 360.0, to_deg % 360.0 if to_deg != 360.0 else 360.0
    return [(lo, hi)] if lo <= hi else [(lo, 360.0), (0.0, hi)]


def _band_legend(band) -> str:
    if band.action == "reference":
        return f"{band.label} deg: the paper's failure region"
    return f"band {band.label} deg ({band.action})"


def circumplex_png(run: Run) -> bytes:
    """Targets vs predictions on the valence/arousal plane, failure bands shaded."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(8, 8))
        ax = fig.add_subplot()
        for i, band in enumerate(run.bands):
            hi = band.to_deg if band.to_deg >= band.from_deg else band.to_deg + 360.0
            ax.add_patch(Wedge((0, 0), 1.25, band.from_deg, hi, color=_BAND, alpha=0.45, lw=0, zorder=0,
                               label=_band_legend(band) if i < 4 else None))
        ax.add_patch(Circle((0, 0), 1.0, fill=False, color="0.5", lw=0.8))
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        for e in circumplex.emotions():
            r = np.radians(e.angle_deg)
            ax.plot([0, np.cos(r)], [0, np.sin(r)], color="0.85", lw=0.5, zorder=1)
            # radial labels pointing outwards: close names (calm .. content, 2 deg apart) then fan
            # out instead of printing on top of each other
            left = 90 < e.angle_deg < 270
            ax.text(1.04 * np.cos(r), 1.04 * np.sin(r), e.name, fontsize=6.5, ha="right" if left else "left",
                    va="center", rotation=e.angle_deg - 180 if left else e.angle_deg, rotation_mode="anchor",
                    color="0.25")
        m = run.frame[run.frame["measured"]]
        dots = _subsample(m)
        if len(dots):
            ax.scatter(dots["pred_valence"], dots["pred_arousal"], s=3, lw=0, alpha=0.25,
                       c=dots["status"].map(_STATUS_COLOURS).fillna(_REJECTED).to_numpy(), zorder=2, rasterized=True)
        # One arrow per target: where it was asked for -> where the estimator put it on average.
        per_target = m.groupby("target", sort=True)[["target_valence", "target_arousal", "pred_valence",
                                                    "pred_arousal"]].mean()
        for t in per_target.itertuples(index=False):
            ax.annotate("", xy=(t.pred_valence, t.pred_arousal), xytext=(t.target_valence, t.target_arousal),
                        arrowprops=dict(arrowstyle="-|>", color="0.15", lw=0.6, mutation_scale=6), zorder=4)
        ax.scatter(per_target["target_valence"], per_target["target_arousal"], s=14, c="#1565c0", zorder=5,
                   label="target")
        ax.scatter(per_target["pred_valence"], per_target["pred_arousal"], s=10, marker="x", c="k", lw=0.8,
                   zorder=5, label="mean prediction")
        ax.scatter([], [], s=12, c=_ACCEPTED, label="prediction, accepted")
        ax.scatter([], [], s=12, c=_REJECTED, label="prediction, rejected")
        ax.set_xlim(-1.3, 1.3)
        ax.set_ylim(-1.3, 1.3)
        ax.set_aspect("equal")
        ax.set_xlabel("valence")
        ax.set_ylabel("arousal")
        ax.set_title(f"{run.name}: target vs predicted valence/arousal ({len(m):,} measured)")
        ax.legend(loc="lower left", fontsize=7, framealpha=0.9)
        fig.tight_layout()
        return _png(fig)


def _per_direction(run: Run) -> pd.DataFrame:
    named = run.frame[~run.frame["direction"].isin([NEUTRAL, POINTS]) & run.frame["measured"]]
    g = named.groupby("direction", observed=True)
    out = g["direction_error_deg"].agg(["mean", "count"])
    out["sd"] = g["direction_error_deg"].std(ddof=0)
    out["angle"] = g["direction_angle"].first()
    return out.reset_index()


def direction_error_png(run: Run, other: Run | None = None) -> bytes:
    """Direction error against target angle: every sample faint, mean ± SD per direction."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 5))
        ax = fig.add_subplot()
        for i, band in enumerate(run.bands):
            for j, (lo, hi) in enumerate(_band_spans(band.from_deg, band.to_deg)):
                ax.axvspan(lo, hi, color=_BAND, alpha=0.45, lw=0, zorder=0,
                           label=_band_legend(band) if j == 0 and i < 4 else None)
        m = run.frame[run.frame["measured"] & run.frame["direction_error_deg"].notna()]
        dots = _subsample(m)
        if len(dots):
            ax.scatter(dots["target_angle_deg"], dots["direction_error_deg"], s=3, lw=0, alpha=0.2, c="0.35",
                       zorder=1, rasterized=True, label="sample")
        series = [(run, "#1565c0", run.name)] + ([(other, "#ef6c00", other.name)] if other is not None else [])
        for k, (r, colour, name) in enumerate(series):
            d = _per_direction(r)
            if len(d):
                ax.errorbar(d["angle"] + (1.2 * k), d["mean"], yerr=d["sd"], fmt="o", ms=4, color=colour,
                            capsize=2, lw=1, zorder=3, label=f"{name}: mean ± SD per direction")
        ax.set_xlim(0, 360)
        ax.set_ylim(0, 180)
        ax.set_xticks(range(0, 361, 30))
        ax.set_xlabel("target angle (deg, counter-clockwise from +valence)")
        ax.set_ylabel("direction error (deg)")
        top = ax.secondary_xaxis("top")
        top.set_xticks([e.angle_deg for e in circumplex.emotions()], [e.name for e in circumplex.emotions()],
                       fontsize=6, rotation=90)
        ax.grid(axis="y", color="0.9")
        ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
        fig.tight_layout()
        return _png(fig)


def acceptance_png(run: Run, other: Run | None = None) -> bytes:
    """Share of accepted / surplus / rejected / skipped rows per direction, or per class in a class
    build (its targets sit at class anchors, mostly not on named directions; another run's rate
    as ticks)."""
    by = "class" if (run.frame["class"] != "").any() else "direction"

    def shares(r: Run) -> pd.DataFrame:
        t = pd.crosstab(r.frame[by], r.frame["status"])
        t = t.reindex(columns=list(STATUSES), fill_value=0)
        return t.div(t.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0.0)

    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 4.5))
        ax = fig.add_subplot()
        t = shares(run)
        x = np.arange(len(t))
        bottom = np.zeros(len(t))
        for status in STATUSES:
            if status == "surplus" and not t[status].any():
                continue   # only quota builds have surplus rows
            colour = _STATUS_COLOURS[status]
            ax.bar(x, t[status].to_numpy(), 0.8, bottom=bottom, color=colour, label=status)
            bottom += t[status].to_numpy()
        if other is not None:
            o = shares(other)["accepted"].reindex(t.index)
            ax.scatter(x, o.to_numpy(), marker="_", s=160, lw=2.2, c="k", zorder=3,
                       label=f"{other.name}: accepted share")
        ax.set_xticks(x, [str(d) for d in t.index], rotation=70, ha="right", fontsize=7)
        ax.set_xlim(-0.6, max(len(t), 1) - 0.4)
        ax.set_ylim(0, 1.12)  # headroom for the legend above the full-height bars
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("share of planned samples")
        ax.set_title(f"{run.name}: acceptance per {by} (all intensities)")
        ax.legend(loc="upper center", ncol=4, fontsize=7, frameon=False)
        fig.tight_layout()
        return _png(fig)


def scores_png(run: Run) -> bytes:
    """Quality and identity-similarity histograms (accepted / rejected stacked), threshold lines."""
    f = run.frame[run.frame["status"] != "skipped"]
    filters = ((run.recipe or {}).get("filters") or {})
    with matplotlib.style.context("default"):
        fig = Figure(figsize=(11, 3.8))
        for k, (column, label, limit) in enumerate((("quality", "quality", filters.get("min_quality")),
                                                     ("identity_similarity", "identity similarity (cosine)",
                                                      filters.get("min_identity_similarity")))):
            ax = fig.add_subplot(1, 2, k + 1)
            values = f[column].dropna()
            if len(values):
                bins = np.histogram_bin_edges(values.to_numpy(), bins=40)
                parts = [f.loc[(f["status"] == s) & f[column].notna(), column].to_numpy()
                         for s in ("accepted", "rejected")]
                ax.hist(parts, bins=bins, stacked=True, color=[_ACCEPTED, _REJECTED], label=["accepted", "rejected"])
                if limit is not None:
                    ax.axvline(limit, color="k", ls="--", lw=1, label=f"threshold {limit:g}")
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_xlabel(label)
            ax.set_ylabel("samples")
        fig.suptitle(f"{run.name}: quality and identity similarity", fontsize=10)
        fig.tight_layout()
        return _png(fig)
