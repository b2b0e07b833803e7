"""Executors run a build's shards: local today; every executor calls worker.Worker per shard."""
