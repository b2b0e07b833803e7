"""Local executor: shards one after another on this process's device.

Model work for shard k+1 runs while a writer thread encodes and commits shard k; at most two
shards are in memory at once, so memory stays flat however many shards there are.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from synthfer.io.shards import ShardStore
from synthfer.plan import Shard
from synthfer.worker import Worker


def run(worker: Worker, shards: list[Shard], store: ShardStore, on_committed: Callable[[Shard, dict], None]) -> None:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="synthfer-writer") as writer:
        in_flight: tuple[Shard, Future] | None = None
        for shard in shards:
            computed = worker.compute(shard)
            if in_flight:
                on_committed(in_flight[0], in_flight[1].result())
            in_flight = (shard, writer.submit(worker.finish, computed, store))
        if in_flight:
            on_committed(in_flight[0], in_flight[1].result())
