"""Several devices of one machine without Ray: one worker process per entry of execution.devices
(e.g. [cuda:0, cuda:1]), each loading the models once and building the shards it is handed.

The processes are spawned (CUDA cannot be forked), run the same per-shard function as the other
executors and commit through the same protocol, so the bytes are those of a local build on the
same kind of device. The parent holds the lock, hands out one shard at a time, retries, replaces
a process that dies and reports progress.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from collections import deque

from synthfer.errors import OutputError, SynthferError
from synthfer.plan import Shard
from synthfer.recipe import LoadedRecipe


def _serve(loaded: LoadedRecipe, slot: int, device: str, shard_fingerprint: str, tasks, results) -> None:
    """Worker process: load the models on `device`, then build shards until told to stop."""
    from synthfer.executors.local import is_fatal, one_line
    from synthfer.io.shards import ShardStore
    from synthfer.worker import Worker

    try:
        worker = Worker.from_recipe(loaded, device)
        if worker.fingerprint != shard_fingerprint:
            raise OutputError(f"{device}: the worker sees other model weights than the build")
    except Exception as err:  # noqa: BLE001 - reported to the parent, which stops the build
        results.put(("broken", slot, None, one_line(err)))
        return
    store = ShardStore(loaded.output_dir)
    while (index := tasks.get()) is not None:
        results.put(("started", slot, index, None))
        try:
            marker = worker.build_shard(worker.plan.shards[index], store)
        except Exception as err:  # noqa: BLE001 - the parent decides: retry or stop
            results.put(("fatal" if is_fatal(err) else "error", slot, index, one_line(err)))
            continue
        results.put(("committed", slot, index, marker))


def run(loaded: LoadedRecipe, shard_fingerprint: str, shards: list[Shard], reporter, retries: int) -> dict[str, str]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    by_index = {s.index: s for s in shards}
    attempts = {s.index: 1 for s in shards}
    waiting = deque(s.index for s in shards)
    procs: dict[int, tuple] = {}      # slot -> (process, its task queue); a device may fill several slots
    busy: dict[int, int | None] = {}  # slot -> shard index in progress
    devices = loaded.recipe.execution.devices
    failed: dict[str, str] = {}

    def start(slot: int) -> None:
        tasks = ctx.Queue()
        proc = ctx.Process(target=_serve, args=(loaded, slot, devices[slot], shard_fingerprint, tasks, results),
                           name=f"synthfer-{slot}-{devices[slot]}", daemon=True)
        proc.start()
        procs[slot], busy[slot] = (proc, tasks), None

    def hand_out() -> None:
        for slot, index in busy.items():
            if index is None and waiting:
                busy[slot] = waiting.popleft()
                procs[slot][1].put(busy[slot])

    def retry_or_fail(index: int, error: str) -> None:
        shard = by_index[index]
        if attempts[index] > retries:
            failed[shard.name] = error
            reporter.failed(shard, error)
        else:
            reporter.retried(shard, attempts[index], error)
            attempts[index] += 1
            waiting.append(index)

    for slot in range(len(devices)):
        start(slot)
    try:
        hand_out()
        while any(i is not None for i in busy.values()) or waiting:
            try:
                kind, slot, index, payload = results.get(timeout=1.0)
            except queue_module.Empty:
                for slot, (proc, _) in list(procs.items()):
                    if not proc.is_alive():  # died without a word (killed, out of memory)
                        lost = busy[slot]
                        start(slot)
                        if lost is not None:
                            retry_or_fail(lost, f"worker on {devices[slot]} died (exit {proc.exitcode})")
                hand_out()
                continue
            if kind == "broken":
                raise OutputError(f"worker on {devices[slot]} could not start: {payload}")
            if kind == "fatal":
                raise OutputError(f"{loaded.output_dir}: write failed on {devices[slot]}: {payload}; "
                                  f"committed shards are intact")
            if kind == "started":
                continue
            busy[slot] = None
            if kind == "committed":
                reporter.committed(by_index[index], payload)
            else:
                retry_or_fail(index, payload)
            hand_out()
        return failed
    except (SynthferError, KeyboardInterrupt):
        for proc, _ in procs.values():
            proc.terminate()
        raise
    finally:
        for proc, tasks in procs.values():
            if proc.is_alive():
                tasks.put(None)
        for proc, _ in procs.values():
            proc.join(timeout=30)
