"""`synthfer models ...`: the registry of published weights (list, fetch), synthfer's own ONNX
exports of EmoNet and MagFace (export-onnx), and inspecting, converting and checking weights."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from synthfer.cli_common import RecipeArg, SetOpt, _guard, out

models_app = typer.Typer(help="Published weights (list, fetch with licence acceptance) and weight files "
                                 "(info, convert, export-onnx, check against a recipe).", no_args_is_help=True)


@models_app.command("info")
def models_info(file: Path = typer.Argument(..., metavar="FILE", help="A generator or editor weights file, or an ONNX estimator.")):
    """Show a weights file's format, architecture, resolution, parameters and sha256 (loads it safely)."""
    def body():
        from synthfer.models.checkpoints import inspect

        info = inspect(file)
        table = Table(title=str(file), show_header=False)
        table.add_column("field")
        table.add_column("value", overflow="fold")
        for key, value in info.items():
            table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
        out.print(table)
    _guard(body)


@models_app.command("convert")
def models_convert(
    src: Path = typer.Argument(..., metavar="IN", help="Weights in any supported format (.pkl, .pt, .safetensors)."),
    dst: Path = typer.Argument(..., metavar="OUT", help="Where to write the .safetensors file."),
):
    """Convert weights once to safetensors (config in the metadata), so later builds never unpickle."""
    def body():
        from synthfer.errors import UsageError
        from synthfer.models.checkpoints import convert

        if dst.suffix != ".safetensors":
            raise UsageError(f"{dst}: the output name must end in .safetensors")
        info = convert(src, dst)
        out.print(f"wrote {dst}: {info.get('architecture', 'model')}, {info.get('parameters', 0):,} parameters, "
                  f"sha256 {info.get('sha256', '?')}")
    _guard(body)


@models_app.command("check")
def models_check(recipe: Path = RecipeArg, overrides: Optional[List[str]] = SetOpt,
                 strict: bool = typer.Option(False, "--strict", help="Exit 5 when there are warnings.", metavar="")):
    """Load every model of a recipe, check they fit together, run one batch through all of them
    with the recipe's preprocessing (failing on whatever a build would fail on, warning about
    outputs that look like logits or probabilities), and show their licence notes."""
    def body():
        from synthfer.errors import StrictWarningsError
        from synthfer.models.load import check_fit, licence_notes, load_models
        from synthfer.models.probe import probe
        from synthfer.recipe import load_recipe

        loaded = load_recipe(recipe, overrides or [])
        models = load_models(loaded)
        for line in check_fit(loaded, models):
            out.print(line, markup=False)
        lines, warnings = probe(loaded, models)
        for line in lines:
            out.print(line, markup=False)
        for role, ident in models.identities.items():
            out.print(f"{role}: {ident}")
        for note in licence_notes(loaded):
            flag = {True: "ok for commercial use", False: "NON-COMMERCIAL", None: "check the terms"}[note["commercial"]]
            out.print(f"licence {note['role']} ({note['kind']}): [{flag}] {note['note']}", markup=False)
        for warning in warnings:
            sys.stderr.write(f"Warning: {warning}\n")
        if warnings and strict:
            raise StrictWarningsError(f"{len(warnings)} warning{'s' if len(warnings) > 1 else ''} with --strict")
    _guard(body)


DirOpt = typer.Option(None, "--dir", metavar="DIR", help="The models folder (default: $SYNTHFER_MODELS_DIR, "
                                                         "else data/models under the current folder).")


@models_app.command("list")
def models_list(folder: Optional[Path] = DirOpt):
    """Show the registry of published weights: name, role, licence, file and whether it is here."""
    def body():
        from synthfer.models import catalog
        from synthfer.models.fetch import pins

        where = catalog.models_dir(folder)
        pinned = pins(where) if where.is_dir() else {}
        table = Table(title=f"Registry (models folder: {where})")
        for col in ("name", "role", "commercial use", "licence", "here"):
            table.add_column(col, overflow="fold", no_wrap=col != "licence")
        for name, e in catalog.entries(where).items():
            here = (where / e.recipe_file).is_file()
            state = "yes" + (", pinned" if e.file in pinned else "") if here else \
                "checkpoint only" if (where / e.file).is_file() else "-"
            short = e.licence.split(";")[0].split(" (")[0]
            table.add_row(name, e.role, "yes" if e.commercial else "NO", short, state)
        out.print(table)
        out.print("Fetch with `synthfer models fetch NAME`; a recipe names an entry as registry:NAME (a file) "
                  "or preset: NAME (quality and VA models).", markup=False)
    _guard(body)


@models_app.command("fetch")
def models_fetch(
    names: List[str] = typer.Argument(..., metavar="NAME...", help="Registry names (synthfer models list)."),
    folder: Optional[Path] = DirOpt,
    accept_licence: Optional[List[str]] = typer.Option(
        None, "--accept-licence", metavar="NAME",
        help="You have read NAME's licence and accept it (needed for non-commercial weights). Repeatable."),
    mirror: Optional[str] = typer.Option(None, "--mirror", metavar="URL",
                                         help="Download from this HTTP(S) folder of the files instead."),
    no_export: bool = typer.Option(False, "--no-export",
                                   help="Do not write the ONNX file of EmoNet and MagFace checkpoints.", metavar=""),
):
    """Download registry entries with a progress bar, resuming a partial download, verifying size,
    sha256 and git blob ids, and pinning what was got in SHA256SUMS. EmoNet and MagFace checkpoints
    are then exported to the ONNX file their preset reads (synthfer models export-onnx)."""
    def body():
        from synthfer.errors import UsageError
        from synthfer.models import catalog
        from synthfer.models.fetch import fetch

        where = catalog.models_dir(folder)
        known = catalog.entries(where)
        entries = [catalog.get(name, where) for name in names]
        for name in accept_licence or []:
            if name not in known:
                raise UsageError(f"--accept-licence {name}: not a registry name")
        accepted = set(accept_licence or [])
        # Refuse every unaccepted licence before downloading anything.
        for entry in entries:
            if not entry.commercial and entry.name not in accepted:
                fetch(entry, where, accept_licence=False)
        for entry in entries:
            got = fetch(entry, where, mirror=mirror, accept_licence=entry.name in accepted, console=out)
            out.print(f"{entry.name}: {got.action} {got.path} ({got.size:,} bytes, sha256 {got.sha256})", markup=False)
            if entry.export and entry.onnx and not no_export:
                target = where / entry.onnx
                if target.is_file() and got.action == "already there":
                    continue
                from synthfer.models.export_onnx import export

                info = export(got.path, target, entry.export)
                out.print(f"{entry.name}: exported {target} ({info['arch']}, {info['parameters']:,} parameters, "
                          f"onnxruntime vs torch {info['max_difference']:.1e} of the output scale)", markup=False)
    _guard(body)


@models_app.command("export-onnx")
def models_export_onnx(
    src: Path = typer.Argument(..., metavar="CHECKPOINT", help="emonet_8.pth, emonet_5.pth or a MagFace .pth."),
    dst: Path = typer.Argument(..., metavar="OUT", help="Where to write the .onnx file."),
    arch: Optional[str] = typer.Option(None, "--arch", metavar="ARCH",
                                       help="emonet, iresnet50 or iresnet100 (default: from the checkpoint's keys)."),
):
    """Export EmoNet (RGB 256 in [0, 1] -> \\[valence, arousal]) or MagFace's iResNet (BGR 112 in
    [0, 1] -> 512-d embedding) to ONNX with synthfer's own implementations, dynamic batch, checked
    against torch to 1e-4."""
    def body():
        from synthfer.models.export_onnx import export

        info = export(src, dst, arch)
        out.print(f"wrote {dst}: {info['arch']}, {info['parameters']:,} parameters, {info['input']} -> "
                  f"{info['output']}, onnxruntime vs torch {info['max_difference']:.1e} of the output scale", markup=False)
    _guard(body)
