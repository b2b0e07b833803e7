"""The one executor loop: which shards still need building, retries, error classification and
reporting. Backends (local, processes, ray) only decide where a shard runs: they `submit` a
shard and `wait` for outcomes, each a marker (committed) or a `Failure`.

Every failure is classified here, once, whatever the backend: an error that retrying cannot
fix (a full disk, permissions, a lost lock, a worker that sees other weights) stops the build
with its own error class and exit code; anything else is retried up to execution.retries times
while the build goes on, then the shard is reported failed (exit 3 at the end).
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from synthfer import errors
from synthfer.errors import (InterruptedBuild, LockedError, ModelFileError, OutputError, StoreUnavailable,
                             WorkerError, first_line)

# Retrying cannot help with these: stop the build, committed shards stay valid.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ELOOP, errno.ENOTDIR}   # the last two: a link or file where an output folder should be
_FATAL_CLASSES = (LockedError, WorkerError, OutputError, ModelFileError)   # a model file is wrong for every shard


@dataclass(frozen=True)
class Failure:
    """Why a shard did not commit. Picklable, so processes and Ray actors report it as it is."""
    message: str
    fatal: bool = False
    error: str = "OutputError"     # the SynthferError class raised for a fatal failure

    def exception(self) -> errors.SynthferError:
        return errors.by_name(self.error)(self.message)


def one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {first_line(err)}" if str(err).strip() else type(err).__name__


def classify(err: BaseException, where: str = "") -> Failure:
    """The Failure of an exception raised while building a shard. Interrupts are not failures:
    callers let InterruptedBuild and non-Exception errors (KeyboardInterrupt) propagate."""
    if isinstance(err, StoreUnavailable):   # every shard would fail alike: stop, do not re-render each
        return Failure(f"{err}; committed shards are intact", fatal=True, error=type(err).__name__)
    if isinstance(err, _FATAL_CLASSES):
        return Failure(str(err), fatal=True, error=type(err).__name__)
    if isinstance(err, OSError) and err.errno in FATAL_ERRNOS:
        detail = f"{err.filename}: {err.strerror}" if err.filename else (err.strerror or str(err))
        return Failure(f"{where}: write failed: {detail}; committed shards are intact".lstrip(": "), fatal=True)
    return Failure(one_line(err))


def attempt(fn, *args, where: str = ""):
    """fn(*args), or the Failure of the exception it raised (interrupts propagate)."""
    try:
        return fn(*args)
    except InterruptedBuild:
        raise
    except Exception as err:  # noqa: BLE001 - every shard error is classified here
        return classify(err, where)


class Backend(Protocol):
    capacity: int      # jobs that may be in flight at once

    def submit(self, job) -> None: ...
    def wait(self) -> list[tuple[object, "dict | Failure"]]: ...   # (worker.Job, outcome); at least one
    def close(self, abort: bool) -> None: ...


def run(backend: Backend, jobs: list, reporter, retries: int) -> tuple[dict[str, str], dict[int, dict]]:
    """Run worker.Job's; returns ({shard name: last error} of those that failed every attempt,
    {shard index: marker} of those committed)."""
    queue = deque((job, 1) for job in jobs)
    attempts: dict[int, int] = {}
    failed: dict[str, str] = {}
    committed: dict[int, dict] = {}
    in_flight = 0
    try:
        while queue or in_flight:
            while queue and in_flight < backend.capacity:
                job, n = queue.popleft()
                attempts[job.shard.index] = n
                backend.submit(job)
                in_flight += 1
            for job, outcome in backend.wait():
                in_flight -= 1
                shard = job.shard
                if not isinstance(outcome, Failure):
                    committed[shard.index] = outcome
                    reporter.committed(shard, outcome)
                elif outcome.fatal:
                    raise outcome.exception()
                elif attempts[shard.index] > retries:
                    failed[shard.name] = outcome.message
                    reporter.failed(shard, outcome.message)
                else:
                    reporter.retried(shard, attempts[shard.index], outcome.message)
                    queue.appendleft((job, attempts[shard.index] + 1))
    except BaseException:
        backend.close(abort=True)
        raise
    backend.close(abort=False)
    return failed, committed
