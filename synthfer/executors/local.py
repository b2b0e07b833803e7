"""Local backends: shards built in this process, on its one device.

`LocalBackend` (a GPU, or one core): model work for shard k+1 runs here while a writer thread
measures, decides, encodes and commits shard k.

`LanesBackend` (a CPU with cores to spare, runtime.lanes): the generator and the writer share the
same cores, so two lane threads each build whole shards (render, then measure, encode, commit),
each rendering on its share of the cores while the other lane writes; a lane left alone takes
every core. Batch progress from the lanes reaches the reporter on this (the main) thread.

Either way at most two shards are in memory at once, so memory stays flat however many shards
there are, and where a shard was built never changes its bytes. Retries and error handling are
the executor core's (executors/core.py).
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

from synthfer import runtime
from synthfer.errors import InterruptedBuild
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


_DONE = object()   # a lane finished a shard (its batch events were queued before this)


class LanesBackend:
    def __init__(self, worker: Worker, where: str, lanes: int):
        import torch

        self.worker, self.where, self.capacity = worker, where, lanes
        self.pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="synthfer-lane")
        self.running: dict[Future, Job] = {}
        self.busy = 0                                   # lanes holding a shard
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.threads = threading.local()
        self.main_threads = torch.get_num_threads()   # the lanes' settings leak into torch's default
        self.report = worker.on_batch
        worker.on_batch, worker.before_batch = self._batch_done, self._before_batch

    def submit(self, job: Job) -> None:
        self.busy += 1   # before the lane starts: it splits the cores by this count
        future = self.pool.submit(attempt, self.worker.build_shard, job, where=self.where)
        self.running[future] = job
        future.add_done_callback(lambda _: self.events.put(_DONE))

    def wait(self) -> list:
        while True:
            event = self.events.get()
            if event is not _DONE:
                if self.report is not None:
                    self.report(*event)
                continue
            done = [f for f in self.running if f.done()]
            if done:
                self.busy -= len(done)
                return [(self.running.pop(f), f.result()) for f in done]

    def close(self, abort: bool) -> None:
        # A commit already under way finishes; a shard being rendered is abandoned at its next
        # batch and queued ones are dropped when the build stops.
        import torch

        if abort:
            self.stop.set()
        try:
            self.pool.shutdown(wait=True, cancel_futures=abort)
        finally:
            self.worker.on_batch, self.worker.before_batch = self.report, None
            torch.set_num_threads(self.main_threads)

    # -- hooks the worker calls on a lane's thread

    def _batch_done(self, shard, samples: int) -> None:
        self.events.put((shard, samples))

    def _before_batch(self) -> None:
        if self.stop.is_set():   # never reported: the build is already stopping for its own reason
            raise InterruptedBuild("the build is stopping: shard abandoned at a batch boundary", 130)
        want = runtime.lane_threads(self.busy)
        if getattr(self.threads, "n", None) != want:
            import torch

            # torch reads its process-wide count into a thread on the thread's first call, after
            # which set_num_threads is this thread's own (OpenMP) setting: read first, then set.
            # Thread counts never change a pixel.
            torch.get_num_threads()
            torch.set_num_threads(want)
            self.threads.n = want
