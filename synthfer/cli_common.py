"""What every `synthfer` subcommand shares: the console, the common options, and the guard that
turns any error into one-line messages and a documented exit code."""

from __future__ import annotations

import sys
from typing import Callable

import typer
from rich.console import Console

from synthfer.errors import EXIT_INTERNAL, SynthferError, first_line

ISSUES_URL = "https://github.com/synthfer/synthfer/issues"

out = Console(highlight=False, soft_wrap=True)

RecipeArg = typer.Argument(..., metavar="RECIPE", help="Path to the recipe YAML file.", show_default=False)
SetOpt = typer.Option(None, "--set", metavar="FIELD=VALUE",
                      help="Override a recipe field (dotted path, YAML value), e.g. --set identities.count=10. Repeatable.")


_debug = False  # --debug: show the traceback of an unexpected error


def set_debug(value: bool) -> None:
    global _debug
    _debug = value


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command body; turn every error into one-line messages and a documented exit code.
    SynthferError: its message and code. OSError (a file system can cause one anywhere):
    `Error: FILE: reason`, exit 1. Anything else is a bug: one line, "please report", exit 70;
    the traceback only with --debug."""
    try:
        code = fn()
    except SynthferError as err:
        for line in err.lines():
            sys.stderr.write(f"Error: {line}\n")
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("Error: interrupted\n")
        raise typer.Exit(130) from None
    except OSError as err:
        if _debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        sys.stderr.write(f"Error: {where}{err.strerror or first_line(err)}\n")
        raise typer.Exit(1) from None
    except Exception as err:  # noqa: BLE001 - the last resort: never a traceback for a user
        if _debug:
            raise
        sys.stderr.write(f"Error: internal error ({type(err).__name__}: {first_line(err)}); please report it at "
                         f"{ISSUES_URL} with the command you ran (--debug shows the traceback)\n")
        raise typer.Exit(EXIT_INTERNAL) from None
    raise typer.Exit(code or 0)
