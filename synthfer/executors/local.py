"""Local backend: shards one after another on this process's device.

Model work for shard k+1 runs while a writer thread measures, decides, encodes and commits
shard k; at most two shards are in memory at once, so memory stays flat however many shards
there are. Retries and error handling are the executor core's (executors/core.py).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from synthfer.executors.core import Failure, attempt
from synthfer.worker import Job, Worker


class LocalBackend:
    capacity = 2   # one shard computing here while the writer thread finishes the one before

    def __init__(self, worker: Worker, where: str):
        self.worker, self.where = worker, where
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthfer-writer")
        self.pending: deque[tuple[Job, Future | Failure]] = deque()

    def submit(self, job: Job) -> None:
        computed = attempt(self.worker.compute, job, where=self.where)
        if isinstance(computed, Failure):
            self.pending.append((job, computed))
        else:
            self.pending.append((job, self.writer.submit(attempt, self.worker.finish, computed, where=self.where)))

    def wait(self) -> list:
        job, outcome = self.pending.popleft()
        return [(job, outcome.result() if isinstance(outcome, Future) else outcome)]

    def close(self, abort: bool) -> None:
        # A commit already under way finishes; queued ones are dropped when the build stops.
        self.writer.shutdown(wait=True, cancel_futures=abort)
