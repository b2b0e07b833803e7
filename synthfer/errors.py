"""Typed errors. The library raises these; the CLI prints `Error: <message>` and exits with `exit_code`.

Exit codes (documented in README): 0 ok, 1 build failed, 2 bad usage / recipe / model file
(nothing written), 3 some shards failed after retries, 4 a quota not met within
identities.max_count, 5 warnings with --strict, 70 internal error (a bug: please report),
75 output locked by another build, 130 / 143 interrupted by SIGINT / SIGTERM.
"""

from __future__ import annotations

EXIT_INTERNAL = 70  # EX_SOFTWARE: an exception synthfer did not expect


def first_line(err: BaseException) -> str:
    """The first non-empty line of an exception's message (its type name when it has none)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


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
    """Output folder problems (not writable, not a synthfer output, disk full)."""

    exit_code = 1


class StoreUnavailable(OutputError):
    """The object store failed a call (no answer, or an error that is not "not found" / "exists")
    several times in a row. Not an OSError on purpose: code that reads an unreadable marker as a
    broken shard must not rebuild or delete committed shards because the store is down."""


class DownloadError(SynthferError):
    """`models fetch` could not download or verify a file (HTTP status, connection, proxy,
    timeout, hash mismatch, disk full); nothing half-written is left under the file's name."""

    exit_code = 1


class WorkerError(SynthferError):
    """A worker (process, Ray actor) could not start or sees other inputs than the build
    (e.g. other weight files on a node). The same class, so the same exit code, whatever the
    executor."""

    exit_code = 1


class LockedError(SynthferError):
    """Another build holds the output folder's lock (or took it over from this one)."""

    exit_code = 75

    def __init__(self, message: str, holder: str = "holder unknown"):
        super().__init__(message)
        self.holder = holder    # "pid N on HOST, started T"


class ShardsFailedError(SynthferError):
    """The build finished, but some shards failed after their retries. `result` holds the
    build's summary (the manifest covers the committed shards)."""

    exit_code = 3

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class QuotaNotMetError(SynthferError):
    """The build finished every round it could, but some class (or target) is still short of
    its quota within identities.max_count. `result` holds the build's summary."""

    exit_code = 4

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class StrictWarningsError(SynthferError):
    """--strict: the build finished with warnings (an empty class, split or filter-all)."""

    exit_code = 5

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class InterruptedBuild(SynthferError):
    """SIGINT/SIGTERM: the current shard was abandoned; committed shards stay valid."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def by_name(name: str) -> type[SynthferError]:
    """The error class called `name` (to raise in the driver what a worker process reported)."""
    found = {cls.__name__: cls for cls in _all(SynthferError)}
    return found.get(name, SynthferError)


def _all(cls: type) -> list[type]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _all(child)]
