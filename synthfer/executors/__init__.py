"""Executors run a build's pending shards and report each commit, retry and failure.

All of them call the same per-shard function (worker.Worker.build_shard) and commit through
io.shards, so where a shard was built never changes its bytes:

* local: this process, one device; a writer thread overlaps assessment/encoding with generation;
* processes: one spawned process per entry of execution.devices (several GPUs, one machine);
* ray: one actor per worker on a Ray cluster (`pip install 'synthfer[ray]'`).
"""

from __future__ import annotations


def run_shards(loaded, worker, shards, store, reporter) -> dict[str, str]:
    """Build `shards` with the recipe's executor; returns {shard name: error} of those that failed."""
    ex = loaded.recipe.execution
    if ex.executor == "ray":
        from synthfer.executors import ray
        return ray.run(loaded, worker.fingerprint, shards, reporter, ex.retries)
    if ex.devices and len(ex.devices) > 1:
        from synthfer.executors import processes
        return processes.run(loaded, worker.fingerprint, shards, reporter, ex.retries)
    from synthfer.executors import local
    return local.run(worker, shards, store, reporter, ex.retries)
