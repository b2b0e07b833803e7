"""Evaluation reports of a build output: the paper's protocol tables, plots, contact sheets and
one self-contained HTML page, written to OUT_DIR/report/.

    from synthfer.report import write_report
    write_report("out/protocol")                              # -> out/protocol/report
    write_report("out/after", compare="out/before")           # + compare.csv / compare.md

The numbers are the manifest's score columns, which the assess stage computed with
synthfer.metrics (the module the filters decide with), aggregated with pandas.
"""

from __future__ import annotations

import io
from pathlib import Path

from synthfer.errors import LockedError, OutputError
from synthfer.io.folder import OutputFolder
from synthfer.io.lock import output_lock
from synthfer.report import html, plots, tables
from synthfer.report.load import STATUSES, Run, load_run

__all__ = ["write_report", "load_run", "Run", "REPORT_DIR"]

REPORT_DIR = "report"
_PLOTS = (
    ("circumplex.png", "Target vs predicted valence/arousal",
     "Blue dots: targets; crosses: the mean prediction of each target, joined by an arrow; faint dots: "
     "individual predictions (green accepted, red rejected). Shaded: failure bands."),
    ("direction_error.png", "Direction error by target angle",
     "Each sample's direction error (grey) and each named direction's mean ± SD; shaded: failure bands."),
    ("acceptance.png", "Acceptance per direction (per class in a class build)",
     "Share of planned samples accepted, surplus (over a quota), rejected and skipped, over all intensities."),
    ("scores.png", "Quality and identity similarity",
     "Histograms over measured samples; dashed lines: the recipe's min_quality and min_identity_similarity."),
)


def write_report(out_dir: str | Path | OutputFolder, compare: str | Path | OutputFolder | None = None,
                 sheets: bool = True, warnings: list | None = None) -> str:
    """Write OUT_DIR/report/ and return the report page's full name (path or URL).
    warnings: gets what a reader must not miss (a partial build), also written in the report.

    compare: another build output; its tables are set beside this one's with differences
    (this - other). sheets: contact sheets of a few identities (reads images from the shards).
    Raises UsageError when a folder has no manifest.parquet, OutputError when the report
    cannot be written.
    """
    run = load_run(out_dir)
    if warnings is not None:
        warnings += [n for n in run.notes if n.startswith("Partial build")]
    other = load_run(compare) if compare is not None else None
    frame = tables.metrics_frame(run)
    reason_names = sorted(set(run.reason_values.tolist()))
    sections = [x for x in (tables.class_split_section(run), tables.angle_intensity_section(run),
                            tables.estimator_section(run)) if x] \
        + tables.sections(frame, reason_names, run.bands)
    summary = _summary(run)

    files: dict[str, bytes] = {}
    files["metrics.csv"] = _csv(frame)
    files["metrics.md"] = _markdown(f"synthfer report: {run.name}", summary + run.notes, sections)
    compare_sections = []
    if other is not None:
        merged = tables.compare_frame(frame, tables.metrics_frame(other))
        this_name, other_name = _names(run, other)
        compare_sections = tables.compare_sections(merged, this_name, other_name)
        files["compare.csv"] = _csv(merged)
        files["compare.md"] = _markdown(f"synthfer report: {this_name} compared with {other_name}",
                                        summary + _summary(other), compare_sections)
    pngs = {"circumplex.png": plots.circumplex_png(run),
            "direction_error.png": plots.direction_error_png(run, other),
            "acceptance.png": plots.acceptance_png(run, other),
            "scores.png": plots.scores_png(run)}
    files.update(pngs)
    sheet_pngs = []
    if sheets:
        from synthfer.report.sheets import contact_sheets  # reads tars: only when asked for
        for stem, image in contact_sheets(run):
            buf = io.BytesIO()
            image.save(buf, "PNG", compress_level=6)
            files[f"{stem}.png"] = buf.getvalue()
            sheet_pngs.append((stem, buf.getvalue()))
    files["report.html"] = html.page(
        f"synthfer report: {run.name}", summary + run.notes,
        [(heading, text, pngs[name]) for name, heading, text in _PLOTS],
        sections, compare_sections, sheet_pngs).encode("utf-8")
    return _write(run.folder, run.layout, files)


def _names(run: Run, other: Run) -> tuple[str, str]:
    """Labels for the two sides; folder names when both builds share a recipe name."""
    if run.name != other.name:
        return run.name, other.name
    a, b = run.folder.location, other.folder.location
    short = (a.rstrip("/").rsplit("/", 1)[-1], b.rstrip("/").rsplit("/", 1)[-1])
    return short if short[0] != short[1] else (a, b)


def _summary(run: Run) -> list[str]:
    f = run.frame
    counts = f["status"].value_counts()
    n = len(f)
    share = (lambda k: f" ({100 * counts.get(k, 0) / n:.1f}%)" if n else "")
    shown = [s for s in STATUSES if s != "surplus" or counts.get(s, 0)]   # surplus only in quota builds
    return [f"{run.name} ({run.folder.location}): {n:,} rows; "
            + ", ".join(f"{s} {counts.get(s, 0):,}{share(s)}" for s in shown)
            + f"; VA measured for {int(f['measured'].sum()):,}."]


def _csv(frame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def _markdown(title: str, summary: list[str], sections) -> bytes:
    head = [f"# {title}", ""] + [f"{line}  " for line in summary] + [
        "", "Errors as in the paper's protocol (synthfer/metrics.py): mean ± SD (population SD); "
        "direction in degrees, the others in valence/arousal units.", ""]
    return ("\n".join(head) + "\n" + tables.to_markdown(sections)).encode("utf-8")


def _write(folder: OutputFolder, layout, files: dict[str, bytes]) -> str:
    """The report's files under OUT/report/, under the output's lock (a running build holds it)."""
    report = layout.report_dir
    try:
        with output_lock(folder, layout):
            # older copies of our files not written this time go, so a report folder never mixes
            # runs (e.g. a compare.md left from an earlier --compare); other files stay
            for entry in folder.list(report):
                if not entry.is_dir and layout.is_report_file(entry.name) and entry.name not in files:
                    folder.remove(f"{report}/{entry.name}")
            folder.write_all((f"{report}/{name}", data) for name, data in files.items())
    except LockedError as err:
        raise LockedError(f"{folder.location}: a build is running ({err.holder}); write the report when it has "
                          f"finished", err.holder) from None
    except OSError as err:
        raise OutputError(f"{folder.display(report)}: cannot write the report: {err.strerror or err}") from None
    return folder.display(f"{report}/report.html")
