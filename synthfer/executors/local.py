"""Local backend: shards built in this process, on its one device.

On a GPU (and on one core) there is one lane: model work for shard k+1 runs here while a writer
thread measures, decides, encodes and commits shard k. On a CPU the generator and the writer
share the same cores, so there are two lanes (runtime.lanes): two threads each build whole shards
(render, then measure, encode, commit), each rendering on its share of the cores while the other
lane writes; a lane left alone takes every core. Either way at most two shards are in memory at
once, so memory stays flat however many shards there are, and where a shard was built never
changes its bytes. Batch progress from the lanes reaches the reporter on this (the main) thread.
Retries and error handling are the executor core's (executors/core.py).
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

_DONE = object()   # a lane finished a shard (its batch events were queued before this)


class LocalBackend:
    def __init__(self, worker: Worker, where: str, lanes: int = 1):
        self.worker, self.where, self.lanes = worker, where, lanes
        self.capacity = 2 if lanes == 1 else lanes   # one lane: one computing here, one being written
        if lanes == 1:
            self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthfer-writer")
            self.pending: deque[tuple[Job, Future | Failure]] = deque()
            return
        self.pool = ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="synthfer-lane")
        self.running: dict[Future, Job] = {}
        self.busy = 0                                  # lanes holding a shard
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.stop = threading.Event()
        self.threads = threading.local()
        self.report = worker.on_batch
        worker.on_batch, worker.before_batch = self._batch_done, self._before_batch
        import torch

        self.main_threads = torch.get_num_threads()   # the lanes' settings leak into torch's default

    # -- one lane: compute here, finish on the writer thread

    def submit(self, job: Job) -> None:
        if self.lanes > 1:
            self.busy += 1   # before the lane starts: it splits the cores by this count
            future = self.pool.submit(attempt, self.worker.build_shard, job, where=self.where)
            self.running[future] = job
            future.add_done_callback(lambda _: self.events.put(_DONE))
            return
        computed = attempt(self.worker.compute, job, where=self.where)
        if isinstance(computed, Failure):
            self.pending.append((job, computed))
        else:
            self.pending.append((job, self.writer.submit(attempt, self.worker.finish, computed, where=self.where)))

    def wait(self) -> list:
        if self.lanes == 1:
            job, outcome = self.pending.popleft()
            return [(job, outcome.result() if isinstance(outcome, Future) else outcome)]
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
        if self.lanes == 1:
            self.writer.shutdown(wait=True, cancel_futures=abort)
            return
        if abort:
            self.stop.set()
        try:
            self.pool.shutdown(wait=True, cancel_futures=abort)
        finally:
            self.worker.on_batch, self.worker.before_batch = self.report, None
            import torch

            torch.set_num_threads(self.main_threads)

    # -- lanes: hooks the worker calls on a lane's thread

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
