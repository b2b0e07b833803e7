"""`synthfer` and `python -m synthfer`: signal handlers first (synthfer/signals.py), then the CLI,
so SIGTERM/SIGINT give their documented exit codes even while torch is still being imported."""

from __future__ import annotations

import sys

from synthfer import runtime, signals
from synthfer.errors import InterruptedBuild


def main() -> None:
    signals.install()
    runtime.set_process_env()   # before torch is imported
    runtime.tune_malloc()       # before any other thread has a malloc arena: lanes share one heap
    try:
        from synthfer.cli import app
        try:   # typer >= 0.20 parses with its own copy of click
            from typer._click import exceptions as click
        except ImportError:
            from click import exceptions as click

        try:
            code = app(standalone_mode=False)
        except click.NoArgsIsHelpError as err:
            sys.stdout.write(err.ctx.get_help() + "\n")
            code = 0
        except click.UsageError as err:  # one line, like every other mistake (not click's framed panel)
            where = err.ctx.command_path if err.ctx is not None else "synthfer"
            sys.stderr.write(f"Error: {where}: {err.format_message()} (see {where} --help)\n")
            code = 2
        sys.exit(code if isinstance(code, int) else 0)
    except InterruptedBuild as err:  # a signal outside any command body (imports, argument parsing)
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
