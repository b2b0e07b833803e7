"""Local executor: shards one after another on this process's device.

Model work for shard k+1 runs while a writer thread assesses, encodes and commits shard k; at
most two shards are in memory at once, so memory stays flat however many shards there are.

A shard that raises is retried (whole: compute and finish again) up to `retries` times while
the build goes on; errors that retrying cannot fix (disk full, permissions) stop the build.
"""

from __future__ import annotations

import errno
from concurrent.futures import Future, ThreadPoolExecutor

from synthfer.errors import InterruptedBuild
from synthfer.io.shards import ShardStore
from synthfer.plan import Shard
from synthfer.worker import Worker

# Retrying cannot help with these: stop the build, committed shards stay valid.
FATAL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def is_fatal(err: BaseException) -> bool:
    """Errors that end the build instead of a retry: a full disk, permissions, an interrupt."""
    return (isinstance(err, (InterruptedBuild, KeyboardInterrupt)) or not isinstance(err, Exception)
            or (isinstance(err, OSError) and err.errno in FATAL_ERRNOS))


def run(worker: Worker, shards: list[Shard], store: ShardStore, reporter, retries: int) -> dict[str, str]:
    """Build `shards`; returns {shard name: last error} for those that failed every attempt."""
    failed: dict[str, str] = {}

    def attempt_again(shard: Shard, err: BaseException, attempts: int) -> None:
        # Synchronous retries after the first failure: simple, and failures are rare.
        while True:
            if is_fatal(err):
                raise err
            if attempts > retries:
                failed[shard.name] = one_line(err)
                reporter.failed(shard, one_line(err))
                return
            reporter.retried(shard, attempts, one_line(err))
            try:
                marker = worker.build_shard(shard, store)
            except BaseException as again:  # noqa: BLE001 - classified by the loop
                err, attempts = again, attempts + 1
                continue
            reporter.committed(shard, marker)
            return

    def settle(shard: Shard, future: Future) -> None:
        try:
            marker = future.result()
        except BaseException as err:  # noqa: BLE001
            attempt_again(shard, err, 1)
        else:
            reporter.committed(shard, marker)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthfer-writer") as writer:
        in_flight: tuple[Shard, Future] | None = None
        for shard in shards:
            try:
                computed = worker.compute(shard)
            except BaseException as err:  # noqa: BLE001
                if in_flight:
                    settle(*in_flight)
                    in_flight = None
                attempt_again(shard, err, 1)
                continue
            if in_flight:
                settle(*in_flight)
            in_flight = (shard, writer.submit(worker.finish, computed, store))
        if in_flight:
            settle(*in_flight)
    return failed


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
