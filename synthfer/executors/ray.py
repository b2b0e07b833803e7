"""Ray backend: one actor per worker, models loaded once per actor, one shard per task.

Each actor runs the same per-shard function as the local backend and commits through the same
protocol, so a Ray build and a local build of one recipe give the same bytes. Actors classify
their own failures (executors/core.py) and return them as values, so a failure means the same
thing here as anywhere; an actor that dies is replaced and its shard retried. The output folder
must be reachable from every node: a shared file system, or an object store URL.

Needs `pip install 'synthfer[ray]'`; imported only when a recipe asks for it.
"""

from __future__ import annotations

from synthfer.errors import UsageError
from synthfer.executors.core import Failure, attempt, one_line


class ShardActor:
    """Lives on a Ray worker: loads the models once, then builds the shards it is given."""

    def __init__(self, loaded, store, shard_fingerprint: str):
        from synthfer.executors import open_worker

        self.store = store
        self.worker = attempt(open_worker, loaded, store, shard_fingerprint, None, where=store.folder.location)

    def build(self, job):
        if isinstance(self.worker, Failure):
            return Failure(self.worker.message, fatal=True, error="WorkerError")
        return attempt(self.worker.build_shard, job, where=self.store.folder.location)


class RayBackend:
    def __init__(self, loaded, store, shard_fingerprint: str, jobs: list):
        try:
            import ray
        except ImportError:
            raise UsageError("execution.executor: ray needs Ray installed: pip install 'synthfer[ray]'") from None
        self.ray = ray
        spec = loaded.recipe.execution.ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            try:
                ray.init(address=spec.address, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise UsageError(f"execution.ray.address: cannot reach Ray at "
                                 f"{spec.address or 'a new local instance'}: {one_line(err)}") from None
        gpu = loaded.recipe.execution.device.startswith("cuda")
        resources = ray.cluster_resources()
        gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if gpu else 0.0)
        n = spec.workers or (max(1, int(resources.get("GPU", 0) // max(gpus, 1))) if gpu
                             else max(1, int(resources.get("CPU", 1) // 2)))
        actor_class = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=gpus, max_restarts=0)(ShardActor)
        self.new_actor = lambda: actor_class.remote(loaded, store, shard_fingerprint)
        self.idle = [self.new_actor() for _ in range(min(n, max(1, len(jobs))))]
        self.capacity = len(self.idle)
        self.running: dict = {}

    def submit(self, job) -> None:
        actor = self.idle.pop()
        self.running[actor.build.remote(job)] = (actor, job)

    def wait(self) -> list:
        from ray.exceptions import RayActorError, RayTaskError

        done, _ = self.ray.wait(list(self.running), num_returns=1)
        actor, job = self.running.pop(done[0])
        try:
            outcome = self.ray.get(done[0])
        except RayActorError as err:  # the actor's process died: replace it, retry the shard
            actor = self.new_actor()
            outcome = Failure(f"Ray worker died: {one_line(err)}")
        except RayTaskError as err:
            outcome = Failure(one_line(getattr(err, "cause", None) or err))
        self.idle.append(actor)
        return [(job, outcome)]

    def close(self, abort: bool) -> None:
        if self.started_here:
            self.ray.shutdown()
