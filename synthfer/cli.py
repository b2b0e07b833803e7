"""The `synthfer` command. Thin: parse arguments, make one library call, print, exit.

Any SynthferError becomes `Error: <message>` lines on stderr and its exit code; see README's
exit-code table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from synthfer import __version__, circumplex
from synthfer.cli_common import ISSUES_URL, RecipeArg, SetOpt, _guard, out, set_debug  # noqa: F401

app = typer.Typer(
    help="Build synthetic facial-expression datasets (StyleGAN2 + EmoStyle) from a YAML recipe.",
    epilog="Exit codes: 0 ok, 1 build failed, 2 bad usage/recipe/model file (nothing written), 3 some shards "
           "failed, 4 a quota not met within identities.max_count, 5 warnings with --strict, 70 internal error "
           "(please report), 75 output locked by another build, 130 / 143 interrupted by SIGINT / SIGTERM.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
def _version(value: bool):
    if value:
        out.print(f"synthfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, metavar="",
                                       help="Print the version and exit."),
          debug: bool = typer.Option(False, "--debug", help="Show the traceback of an unexpected error.", metavar="")):
    """Build synthetic facial-expression datasets (StyleGAN2 + EmoStyle) from a YAML recipe.

    Exit codes: 0 ok, 1 build failed, 2 bad usage/recipe/model file (nothing written),
    3 some shards failed, 4 quota not met, 5 warnings with --strict, 70 internal error (please
    report), 75 output locked by another build, 130 / 143 interrupted by SIGINT / SIGTERM.
    """
    set_debug(debug)


@app.command()
def build(
    recipe: Path = RecipeArg,
    output: Optional[str] = typer.Option(None, "--output", "-o", metavar="DIR", help="Write here instead of output.dir."),
    overrides: Optional[List[str]] = SetOpt,
    shards: Optional[str] = typer.Option(None, "--shards", metavar="RANGES",
                                         help="Build only these shards, e.g. 0-3,7; the rest can follow in a later run."),
    mode: str = typer.Option("resume", "--mode", metavar="MODE",
                             help="resume: continue a build of the same recipe (refuse another); overwrite: remove "
                                  "the old output first; extend: identities.count grew, build only the new shards."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no summary: errors and warnings only.", metavar=""),
    log_format: str = typer.Option("text", "--log-format", metavar="FORMAT",
                                   help="text, or json: one JSON object per event on stdout (for cron and log collectors)."),
    trust_markers: bool = typer.Option(False, "--trust-markers",
                                       help="Check committed shards by size only, not sha256 (faster resume of huge outputs).", metavar=""),
    with_report: bool = typer.Option(False, "--report", help="Write OUT_DIR/report/ (synthfer report) at the end.", metavar=""),
    strict: bool = typer.Option(False, "--strict", help="Exit 5 when the build finishes with warnings (an empty "
                                                        "class or split, a filter that rejected everything).", metavar=""),
):
    """Generate, edit, assess and write the recipe's dataset: WebDataset shards + Parquet manifest.

    Shards already committed in the output folder are kept (after checking their sha256), so an
    interrupted build resumes where it stopped. One build per output folder at a time.
    """
    def body():
        from synthfer.errors import QuotaNotMetError, ShardsFailedError, StrictWarningsError, UsageError
        from synthfer.progress import make_reporter
        from synthfer.recipe import load_recipe

        if mode not in ("resume", "overwrite", "extend"):
            raise UsageError(f"--mode: must be resume, overwrite or extend, got {mode!r}")
        if log_format not in ("text", "json"):
            raise UsageError(f"--log-format: must be text or json, got {log_format!r}")
        loaded = load_recipe(recipe, overrides or [], output)
        reporter = make_reporter(quiet, log_format)
        reporter.note("starting (importing torch) ...")   # a second or more of silence otherwise
        from synthfer.build import build as run_build
        try:
            result = run_build(loaded, shards=shards, reporter=reporter, mode=mode, trust_markers=trust_markers)
        except (ShardsFailedError, QuotaNotMetError) as err:
            _show_summary(err.result, reporter, quiet)
            if with_report:  # the manifest of the committed shards is there: report on it
                _write_report(loaded.output_folder(), quiet)
            raise
        _show_summary(result, reporter, quiet)
        if with_report:
            _write_report(loaded.output_folder(), quiet)
        if strict and result.warnings:
            raise StrictWarningsError(f"--strict: the build finished with {len(result.warnings)} warning"
                                      f"{'s' if len(result.warnings) != 1 else ''}", result)
    _guard(body)


def _write_report(out_dir, quiet: bool) -> None:
    from synthfer.report import write_report

    page = write_report(out_dir)
    if not quiet:
        out.print(f"report: {page}")


def _show_summary(result, reporter, quiet: bool) -> None:
    from synthfer.progress import JsonLines, summary_tables

    if result is None:
        return
    if isinstance(reporter, JsonLines):
        reporter.summary(result)
    elif not quiet:
        for table in summary_tables(result):
            out.print(table)
    for line in result.warnings:   # on stderr even with --quiet: cron mail must show them
        sys.stderr.write(f"Warning: {line}\n")


@app.command()
def report(
    out_dir: str = typer.Argument(..., metavar="OUT_DIR", help="A build's output folder (path or URL)."),
    compare: Optional[str] = typer.Option(None, "--compare", metavar="OTHER_OUT_DIR",
                                          help="Set another output's tables beside these, with differences."),
    no_sheets: bool = typer.Option(False, "--no-sheets", help="Skip contact sheets (no images read).", metavar=""),
):
    """Write OUT_DIR/report/: the paper's protocol tables, plots, contact sheets and report.html."""
    def body():
        from synthfer.report import write_report

        warnings: list = []
        page = write_report(out_dir, compare=compare, sheets=not no_sheets, warnings=warnings)
        out.print(f"report: {page}")
        for line in warnings:
            sys.stderr.write(f"Warning: {line}\n")
    _guard(body)


@app.command()
def verify(out_dir: str = typer.Argument(..., metavar="OUT_DIR", help="A build's output folder (path or URL).")):
    """Re-hash shards against their markers and the manifest; exit 1 listing any problem."""
    def body():
        from synthfer.errors import LockedError
        from synthfer.io.layout import layout_of
        from synthfer.io.lock import output_lock
        from synthfer.io.verify import check_output, verify as run_verify

        folder = _open_output(out_dir)
        layout = layout_of(folder)
        check_output(folder, layout)   # before the lock: it would create a .lock file in any folder
        try:
            with output_lock(folder, layout, shared=True):  # a running build would make its state look wrong
                problems, counts = run_verify(folder, layout)
        except LockedError as err:
            raise LockedError(f"{folder.location}: a build is running ({err.holder}), so nothing was checked; "
                              f"verify when it has finished") from None
        for line in problems:
            sys.stderr.write(f"Problem: {line}\n")
        status = "FAILED" if problems else "OK"
        out.print(f"{status}: {out_dir}: {counts['valid_shards']}/{counts['shards']} shards valid, "
                  f"{counts['manifest_rows']} manifest rows, {len(problems)} problems")
        return 1 if problems else 0
    _guard(body)


@app.command()
def export(
    out_dir: str = typer.Argument(..., metavar="OUT_DIR", help="A build's output folder (path or URL)."),
    dest: Path = typer.Argument(..., metavar="DEST", help="Where to write the export (an empty or new folder)."),
    fmt: str = typer.Option(..., "--format", metavar="FORMAT",
                            help="imagefolder (split/class/KEY.ext) or affectnet-csv (images + AffectNet CSVs)."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier synthfer export in DEST.", metavar=""),
):
    """Copy the accepted images into a layout other codebases read: torchvision's ImageFolder, or
    AffectNet's training CSVs. Streams shard by shard; every image is checked against the manifest."""
    def body():
        from synthfer.export import export as run_export

        done = run_export(out_dir, fmt, dest, force)
        splits = ", ".join(f"{s} {n}" for s, n in sorted(done.by_split.items()))
        out.print(f"exported {done.images} images ({splits}) as {fmt} to {dest}")
        if done.empty:
            shown = ", ".join(done.empty[:8]) + (f" and {len(done.empty) - 8} more" if len(done.empty) > 8 else "")
            sys.stderr.write(f"Warning: {len(done.empty)} label folder{'s' if len(done.empty) > 1 else ''} with no image, kept so that every "
                             f"split numbers its classes alike (torchvision's ImageFolder needs "
                             f"allow_empty=True): {shown}\n")
    _guard(body)


@app.command()
def validate(recipe: Path = RecipeArg, overrides: Optional[List[str]] = SetOpt,
             strict: bool = typer.Option(False, "--strict", help="Exit 5 when there are warnings.", metavar="")):
    """Check a recipe and print what it would build; exit 2 listing every problem. Warnings
    (settings that cannot be meant, thresholds outside what an existing output measured) go to
    stderr."""
    def body():
        from synthfer.errors import StrictWarningsError
        from synthfer.hints import recipe_warnings
        from synthfer.plan import Plan
        from synthfer.recipe import load_recipe

        loaded = load_recipe(recipe, overrides or [])
        plan = Plan(loaded.recipe)
        classes = f" in {len(loaded.recipe.targets.class_list())} classes" if loaded.recipe.targets.classes else ""
        out.print(f"OK: {recipe}: {loaded.recipe.identities.count} identities x {len(plan.targets)} targets{classes} = "
                  f"{plan.total_samples} samples in {len(plan.shards)} shards -> {loaded.output_location}")
        warnings = recipe_warnings(loaded)
        for line in warnings:
            sys.stderr.write(f"Warning: {line}\n")
        if strict and warnings:
            raise StrictWarningsError(f"--strict: {len(warnings)} warning{'s' if len(warnings) != 1 else ''}")
    _guard(body)


@app.command("plan")
def plan_cmd(recipe: Path = RecipeArg, overrides: Optional[List[str]] = SetOpt,
             all_shards: bool = typer.Option(False, "--all", help="List every shard, not just the first 20.", metavar="")):
    """Show shards, splits, targets and an output size estimate, without loading any model."""
    def body():
        from synthfer.plan import Plan, estimated_bytes
        from synthfer.progress import plan_tables
        from synthfer.recipe import load_recipe

        from synthfer.hints import correction_estimate, quota_estimate, recipe_warnings

        loaded = load_recipe(recipe, overrides or [])
        plan = Plan(loaded.recipe)
        for table in plan_tables(plan, limit=None if all_shards else 20):
            out.print(table)
        out.print(f"{plan.total_samples} samples in {len(plan.shards)} shards "
                  f"({plan.identities_per_shard} identities x {len(plan.targets)} targets per shard); "
                  f"if every planned sample were kept (before any filter) the output would be about "
                  f"{_human(estimated_bytes(plan))} -> {loaded.output_location}")
        if loaded.recipe.targets.quota:
            estimate = quota_estimate(loaded, plan)
            out.print(f"quota: {loaded.recipe.targets.quota} accepted per {'class' if loaded.recipe.targets.classes else 'target'}, "
                      f"split by output.splits; top-up rounds add identities up to {loaded.recipe.identities.cap}"
                      + (f"; {estimate}" if estimate else "; build once to estimate the identities needed"))
        extra = correction_estimate(loaded, plan)
        if extra:
            out.print(extra)
        for line in recipe_warnings(loaded):
            sys.stderr.write(f"Warning: {line}\n")
    _guard(body)


@app.command()
def emotions():
    """List the 28 named circumplex directions usable in targets.emotions."""
    table = Table(title="Named directions (valence, arousal at intensity 1)")
    for col in ("name", "angle", "paper", "valence", "arousal"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for e in circumplex.emotions():
        table.add_row(e.name, f"{e.angle_deg:.1f}", str(e.paper_deg), f"{e.valence:+.3f}", f"{e.arousal:+.3f}")
    out.print(table)


from synthfer.cli_models import models_app  # noqa: E402  (the `synthfer models ...` commands)

app.add_typer(models_app, name="models")


def _open_output(location: str):
    from synthfer.errors import UsageError
    from synthfer.io.folder import open_folder

    try:
        return open_folder(location)
    except ValueError as err:
        raise UsageError(f"{location}: {err}") from None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def main() -> None:
    """The CLI without the early signal handlers; the `synthfer` command is synthfer/__main__.py."""
    app()
