"""`synthfer` and `python -m synthfer`: signal handlers first (synthfer/signals.py), then the CLI,
so SIGTERM/SIGINT give their documented exit codes even while torch is still being imported."""

from __future__ import annotations

import sys

from synthfer import signals
from synthfer.errors import InterruptedBuild


def main() -> None:
    signals.install()
    try:
        from synthfer.cli import app

        app()
    except InterruptedBuild as err:  # a signal outside any command body (imports, argument parsing)
        sys.stderr.write(f"Error: {err}\n")
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
