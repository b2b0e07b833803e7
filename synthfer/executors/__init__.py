"""Executors build a build's pending shards. One core (core.py: retries, failure classes,
reporting, which shards are already committed) drives one of three backends that decide only
where a shard runs; all call the same per-shard function (worker.Worker) and commit through
io/shards, so where a shard was built never changes its bytes:

* local: this process, one device; on a GPU a writer thread overlaps assessment/encoding with
  generation, on a CPU two lanes each build whole shards on their share of the cores;
* processes: one spawned process per entry of execution.devices (several GPUs, one machine);
* ray: one actor per worker on a Ray cluster (`pip install 'synthfer[ray]'`).
"""

from __future__ import annotations

from synthfer.errors import WorkerError


def distributed(recipe) -> bool:
    """True when the shards are built by other processes (the driver loads no model on a device)."""
    ex = recipe.execution
    return ex.executor == "ray" or bool(ex.devices and len(ex.devices) > 1)


def make_backend(loaded, store, worker, shard_fingerprint: str, jobs, lanes: int = 1):
    """The backend the recipe asks for; `worker` is the driver's own and `lanes` its lane count
    (local builds only)."""
    ex = loaded.recipe.execution
    if ex.executor == "ray":
        from synthfer.executors.ray import RayBackend
        return RayBackend(loaded, store, shard_fingerprint, jobs)
    if distributed(loaded.recipe):
        from synthfer.executors.processes import ProcessBackend
        return ProcessBackend(loaded, store, shard_fingerprint, jobs)
    from synthfer.executors.local import LanesBackend, LocalBackend
    if lanes > 1:
        return LanesBackend(worker, store.folder.location, lanes)
    return LocalBackend(worker, store.folder.location)


def open_worker(loaded, store, shard_fingerprint: str, device: str | None):
    """A worker in a process or actor of its own: its models, checked to be the driver's."""
    from synthfer.worker import Worker

    worker = Worker.from_recipe(loaded, store, device)
    if worker.fingerprint != shard_fingerprint:
        raise WorkerError(f"a worker on {worker.models.device} sees other model weights or another device type "
                          f"than the build (fingerprint {worker.fingerprint}, build {shard_fingerprint}); install "
                          f"the same weight files on every node")
    return worker
