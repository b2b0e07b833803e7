"""Ray executor: one actor per worker, models loaded once per actor, shards as tasks.

Each actor runs the same per-shard function as the local executor (Worker.build_shard) and
commits through the same protocol, so a Ray build and a local build of one recipe give the
same bytes. The driver (this process) holds the output lock, hands one shard at a time to
each idle actor, retries failed shards, replaces actors that die, and reports progress.
The output folder must be reachable from every node (a shared file system).

Needs `pip install 'synthfer[ray]'`; imported only when a recipe asks for it.
"""

from __future__ import annotations

from collections import deque

from synthfer.errors import OutputError, UsageError
from synthfer.executors.local import is_fatal, one_line
from synthfer.io.shards import ShardStore
from synthfer.plan import Shard
from synthfer.recipe import LoadedRecipe


class ShardActor:
    """Lives on a Ray worker: loads the models once, then builds the shards it is given."""

    def __init__(self, loaded: LoadedRecipe, shard_fingerprint: str):
        from synthfer.worker import Worker

        self.worker = Worker.from_recipe(loaded)
        if self.worker.fingerprint != shard_fingerprint:  # e.g. a node with different weight files
            raise UsageError(f"a Ray worker sees other model weights (fingerprint {self.worker.fingerprint}, "
                             f"driver {shard_fingerprint})")
        self.store = ShardStore(loaded.output_dir)

    def build(self, index: int) -> dict:
        return self.worker.build_shard(self.worker.plan.shards[index], self.store)


def run(loaded: LoadedRecipe, shard_fingerprint: str, shards: list[Shard], reporter, retries: int) -> dict[str, str]:
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise UsageError("execution.executor: ray needs Ray installed: pip install 'synthfer[ray]'") from None
    spec = loaded.recipe.execution.ray
    gpu = loaded.recipe.execution.device.startswith("cuda")
    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=spec.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise UsageError(f"execution.ray.address: cannot reach Ray at {spec.address or 'a new local instance'}: "
                             f"{one_line(err)}") from None
    try:
        resources = ray.cluster_resources()
        gpus = spec.gpus_per_worker if spec.gpus_per_worker is not None else (1.0 if gpu else 0.0)
        n = spec.workers or (max(1, int(resources.get("GPU", 0) // max(gpus, 1))) if gpu
                             else max(1, int(resources.get("CPU", 1) // 2)))
        actor_class = ray.remote(num_cpus=spec.cpus_per_worker, num_gpus=gpus, max_restarts=0)(ShardActor)

        def new_actor():
            return actor_class.remote(loaded, shard_fingerprint)

        idle = [new_actor() for _ in range(min(n, max(1, len(shards))))]
        queue = deque((shard, 1) for shard in shards)
        running: dict = {}
        failed: dict[str, str] = {}
        while queue or running:
            while idle and queue:
                actor = idle.pop()
                shard, attempt = queue.popleft()
                running[actor.build.remote(shard.index)] = (actor, shard, attempt)
            done, _ = ray.wait(list(running), num_returns=1)
            actor, shard, attempt = running.pop(done[0])
            try:
                marker = ray.get(done[0])
            except (RayActorError, RayTaskError) as err:
                cause = getattr(err, "cause", None) or err
                if isinstance(cause, UsageError):
                    raise cause from None
                if is_fatal(cause):
                    raise OutputError(f"{loaded.output_dir}: write failed on a Ray worker: {one_line(cause)}") from None
                if isinstance(err, RayActorError):
                    actor = new_actor()  # the process died: replace it
                idle.append(actor)
                if attempt > retries:
                    failed[shard.name] = one_line(cause)
                    reporter.failed(shard, one_line(cause))
                else:
                    reporter.retried(shard, attempt, one_line(cause))
                    queue.append((shard, attempt + 1))
                continue
            idle.append(actor)
            reporter.committed(shard, marker)
        return failed
    finally:
        if started_here:
            ray.shutdown()
