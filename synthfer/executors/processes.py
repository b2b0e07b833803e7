"""Several devices of one machine without Ray: one worker process per entry of execution.devices
(e.g. [cuda:0, cuda:1]), each loading the models once and building the shards it is handed.

The processes are spawned (CUDA cannot be forked), run the same per-shard function as the other
backends and commit through the same protocol, so the bytes are those of a local build on the
same kind of device. Failures are classified in the worker (executors/core.py) and reported as
they are; a process that dies is replaced and its shard retried.
"""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import threading

from synthfer.executors.core import Failure, attempt


def _die_with(parent: int) -> None:
    """End this worker the moment the build that started it is gone (SIGKILL leaves no time to
    tell it): it would otherwise keep committing shards into an output whose lock another
    build may hold by then. Linux: the kernel sends SIGKILL when the parent dies; anywhere, a
    thread checks once a second that the parent is still the one that started it."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:   # it died before the line above took effect
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)
    threading.Thread(target=watch, name="synthfer-parent-watch", daemon=True).start()


def _serve(loaded, store, slot: int, device: str, shard_fingerprint: str, tasks, results, parent: int) -> None:
    """Worker process: load the models on `device`, then build shards until told to stop."""
    from synthfer.executors import open_worker

    _die_with(parent)
    worker = attempt(open_worker, loaded, store, shard_fingerprint, device, where=store.folder.location)
    if isinstance(worker, Failure):
        results.put((slot, None, Failure(worker.message, fatal=True, error="WorkerError")))
        return
    while (job := tasks.get()) is not None:
        outcome = attempt(worker.build_shard, job, where=store.folder.location)
        results.put((slot, job.shard.index, outcome))


class ProcessBackend:
    def __init__(self, loaded, store, shard_fingerprint: str, jobs: list):
        self.ctx = mp.get_context("spawn")
        self.results = self.ctx.Queue()
        self.loaded, self.store, self.fingerprint = loaded, store, shard_fingerprint
        self.devices = loaded.recipe.execution.devices
        self.by_index = {j.shard.index: j for j in jobs}
        self.procs: dict[int, tuple] = {}        # slot -> (process, its task queue)
        self.busy: dict[int, int | None] = {}    # slot -> shard index in progress
        for slot in range(len(self.devices)):
            self._start(slot)
        self.capacity = len(self.devices)

    def _start(self, slot: int) -> None:
        tasks = self.ctx.Queue()
        proc = self.ctx.Process(target=_serve, args=(self.loaded, self.store, slot, self.devices[slot],
                                                     self.fingerprint, tasks, self.results, os.getpid()),
                                name=f"synthfer-{slot}-{self.devices[slot]}", daemon=True)
        proc.start()
        self.procs[slot], self.busy[slot] = (proc, tasks), None

    def submit(self, job) -> None:
        slot = next(s for s, index in self.busy.items() if index is None)
        self.busy[slot] = job.shard.index
        self.by_index[job.shard.index] = job
        self.procs[slot][1].put(job)

    def wait(self) -> list:
        while True:
            try:
                slot, index, outcome = self.results.get(timeout=1.0)
            except queue_module.Empty:
                lost = self._replace_dead()
                if lost:
                    return lost
                continue
            if index is None:  # the worker could not start
                raise outcome.exception()
            self.busy[slot] = None
            return [(self.by_index[index], outcome)]

    def _replace_dead(self) -> list:
        lost = []
        for slot, (proc, _) in list(self.procs.items()):
            if not proc.is_alive():  # died without a word (killed, out of memory)
                index = self.busy[slot]
                self._start(slot)
                if index is not None:
                    lost.append((self.by_index[index], Failure(f"worker on {self.devices[slot]} died "
                                                               f"(exit {proc.exitcode})")))
        return lost

    def close(self, abort: bool) -> None:
        for proc, tasks in self.procs.values():
            if abort:
                proc.terminate()
            elif proc.is_alive():
                tasks.put(None)
        for proc, _ in self.procs.values():
            proc.join(timeout=30)


