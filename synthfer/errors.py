"""Typed errors. The library raises these; the CLI prints `Error: <message>` and exits with `exit_code`.

Exit codes (documented in README): 0 ok, 1 build failed, 2 bad usage / recipe / model file
(nothing written), 3 some shards failed after retries, 75 output locked by another build,
130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations


class SynthferError(Exception):
    """Anything a user can cause. `str(err)` is one line meant for a terminal."""

    exit_code = 1

    def lines(self) -> list[str]:
        return [str(self)]


class RecipeError(SynthferError):
    """One or more problems in a recipe; each problem is one line naming file, line and field."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

    def lines(self) -> list[str]:
        return self.problems


class UsageError(SynthferError):
    """Bad command-line usage (e.g. a malformed --set)."""

    exit_code = 2


class ModelFileError(SynthferError):
    """A model file that is missing, unreadable or does not fit the recipe."""

    exit_code = 2


class OutputError(SynthferError):
    """Output directory problems (not writable, not a synthfer output, disk full)."""

    exit_code = 1


class LockedError(SynthferError):
    """Another build holds the output folder's lock."""

    exit_code = 75


class ShardsFailedError(SynthferError):
    """The build finished, but some shards failed after their retries. `result` holds the
    build's summary (the manifest covers the committed shards)."""

    exit_code = 3

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class InterruptedBuild(SynthferError):
    """SIGINT/SIGTERM: the current shard was abandoned; committed shards stay valid."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
