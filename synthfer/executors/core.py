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
from synthfer.errors import InterruptedBuild, LockedError, OutputError, WorkerError, first_line
from synthfer.io.shards import ShardStore
from synthfer.plan import Plan, Shard

# Retrying cannot help with these: stop the build, committed shards stay valid.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                errno.ELOOP, errno.ENOTDIR}   # the last two: a link or file where an output folder should be
_FATAL_CLASSES = (LockedError, WorkerError, OutputError)


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
    capacity: int      # shards that may be in flight at once

    def submit(self, shard: Shard) -> None: ...
    def wait(self) -> list[tuple[Shard, "dict | Failure"]]: ...   # at least one outcome
    def close(self, abort: bool) -> None: ...


def run(backend: Backend, shards: list[Shard], reporter, retries: int) -> dict[str, str]:
    """Build `shards`; returns {shard name: last error} of those that failed every attempt."""
    queue = deque((shard, 1) for shard in shards)
    attempts: dict[int, int] = {}
    failed: dict[str, str] = {}
    in_flight = 0
    try:
        while queue or in_flight:
            while queue and in_flight < backend.capacity:
                shard, n = queue.popleft()
                attempts[shard.index] = n
                backend.submit(shard)
                in_flight += 1
            for shard, outcome in backend.wait():
                in_flight -= 1
                if not isinstance(outcome, Failure):
                    reporter.committed(shard, outcome)
                elif outcome.fatal:
                    raise outcome.exception()
                elif attempts[shard.index] > retries:
                    failed[shard.name] = outcome.message
                    reporter.failed(shard, outcome.message)
                else:
                    reporter.retried(shard, attempts[shard.index], outcome.message)
                    queue.appendleft((shard, attempts[shard.index] + 1))
    except BaseException:
        backend.close(abort=True)
        raise
    backend.close(abort=False)
    return failed


def valid_committed(store: ShardStore, plan: Plan, shard_fingerprint: str, trust_markers: bool,
                    reporter, before_retract) -> dict[int, dict]:
    """Committed shards that match their marker and the plan; the rest are retracted to be rebuilt.
    `before_retract()` runs once before the first retraction (it removes the manifest, so the
    manifest never lists a shard whose files are gone)."""
    planned_rows = {s.index: len(s.identities) * len(plan.targets) for s in plan.shards}
    valid, bad = {}, []
    for index in store.marker_indices():
        try:
            marker = store.read_marker(index)
            problem = store.problem(index, marker, hashes=not trust_markers)
        except (OSError, ValueError) as err:
            marker, problem = {}, f"unreadable marker ({first_line(err)})"
        if problem is None and marker.get("fingerprint") != shard_fingerprint:
            problem = "built with another recipe fingerprint"
        if problem is None and index in planned_rows and marker.get("rows") != planned_rows[index]:
            problem = f"holds {marker.get('rows')} rows, the plan now has {planned_rows[index]}"
        if problem is None:
            valid[index] = marker
        else:
            bad.append((index, problem))
    if bad:
        before_retract()
    for index, problem in bad:
        reporter.note(f"shard-{index:06d}: {problem}: rebuilding it")
        store.retract(index)
    return valid
