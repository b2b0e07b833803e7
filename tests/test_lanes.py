"""Lanes: a local CPU build renders two shards at once, each on its share of the cores
(synthfer/runtime.py, executors/local.py). Where and beside what a shard was built never
changes its bytes; progress still reaches the reporter per batch, on the main thread; an
interrupted build abandons a shard being rendered at its next batch."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from synthfer import runtime
from tests.conftest import REPO
from tests.test_progress import SEVERAL_BATCHES

# test_progress's recipe with 12 identities: 4 shards of 15 samples, batch 2, each lane builds two.
FOUR_SHARDS = SEVERAL_BATCHES.replace("count: 6", "count: 12")


def _files(folder) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def test_two_lanes_write_the_bytes_of_one(cli, write_recipe, tmp_path, monkeypatch):
    recipe = write_recipe(FOUR_SHARDS)
    outputs = {}
    for lanes in ("1", "2"):
        monkeypatch.setenv("SYNTHFER_LANES", lanes)
        out = tmp_path / f"out-{lanes}"
        result = cli("build", recipe, "-q", "--output", out)
        assert result.exit_code == 0, result.output
        run = json.loads((out / "run.json").read_text())
        assert run["runtime"]["lanes"] == {"lanes": int(lanes), "torch_threads_each": max(1, runtime.cores() // int(lanes)),
                                           "reason": "SYNTHFER_LANES"}
        outputs[lanes] = _files(out)
    assert len([k for k in outputs["1"] if k.endswith(".tar")]) == 4
    assert outputs["1"] == outputs["2"]


def test_a_bad_lane_count_is_one_line(cli, write_recipe, monkeypatch, tmp_path):
    monkeypatch.setenv("SYNTHFER_LANES", "two")
    result = cli("build", write_recipe(FOUR_SHARDS))
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == "Error: SYNTHFER_LANES=two: must be a whole number from 1 to 64"
    assert not (tmp_path / "out").exists()


def test_lanes_on_a_cpu_with_cores_and_one_heap_only(monkeypatch):
    monkeypatch.delenv("SYNTHFER_LANES", raising=False)
    monkeypatch.setattr(runtime, "cores", lambda: 4)
    monkeypatch.setattr(runtime, "tune_malloc", lambda: {"allocator": "glibc 2.36", "mmap_threshold": 1 << 30,
                                                           "trim_threshold": 1 << 30, "arena_max": 1})
    monkeypatch.setattr(runtime, "arenas", lambda: 1)
    assert runtime.lanes("cpu") == 2 and runtime.lane_threads(2) == 2 and runtime.lane_threads(1) == 4
    assert runtime.lanes("cuda") == 1
    assert runtime.lanes("cpu", local=False) == 1       # ray / processes: each worker builds one shard at a time
    monkeypatch.setattr(runtime, "arenas", lambda: 3)    # threads made arenas before the allocator was set
    assert runtime.lanes("cpu") == 1
    assert runtime._state["lanes"]["reason"] == "other malloc arenas exist: lanes would not share one heap"
    monkeypatch.setattr(runtime, "tune_malloc", lambda: {"allocator": "unchanged"})   # every thread mmaps alike
    assert runtime.lanes("cpu") == 2
    monkeypatch.setattr(runtime, "cores", lambda: 1)
    assert runtime.lanes("cpu") == 1
    monkeypatch.setenv("SYNTHFER_LANES", "3")
    assert runtime.lanes("cpu") == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
def test_setting_the_allocator_first_keeps_every_thread_on_one_heap():
    """What lanes rely on: with the allocator set before any other thread allocates, threads share
    the main heap; set later, a thread that allocated before has an arena of its own."""
    probe = ("import sys, threading\nfrom synthfer import runtime\n"
             "first = sys.argv[1] == 'first'\n"
             "if first: runtime.tune_malloc()\n"
             "t = threading.Thread(target=lambda: bytearray(1 << 20)); t.start(); t.join()\n"
             "if not first: runtime.tune_malloc()\n"
             "print(runtime.arenas())\n")
    counts = {}
    for order in ("first", "late"):
        proc = subprocess.run([sys.executable, "-c", probe, order], capture_output=True, text=True, cwd=REPO,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        counts[order] = proc.stdout.strip()
    if counts["first"] == "None":
        pytest.skip("malloc_info is not available")
    assert counts == {"first": "1", "late": "2"}


class _Reporter:
    def __init__(self):
        self.events = []

    def rendered(self, shard, samples):
        self.events.append(("rendered", shard.index, threading.current_thread() is threading.main_thread()))

    def committed(self, shard, marker):
        self.events.append(("committed", shard.index, True))

    def retried(self, shard, attempt, error):
        raise AssertionError(error)

    failed = retried


class _FakeWorker:
    """build_shard as a lane runs it: a hook before each batch, a progress call after it."""

    def __init__(self, reporter, batches: int = 3, together: threading.Barrier | None = None):
        self.on_batch, self.before_batch = reporter.rendered, None
        self.batches, self.together, self.threads = batches, together, {}

    def build_shard(self, job):
        import torch

        if self.together is not None:
            self.together.wait(timeout=600)   # both shards in flight before either renders
        for _ in range(self.batches):
            self.before_batch()
            self.threads.setdefault(job.shard.index, set()).add(torch.get_num_threads())
            self.on_batch(job.shard, 1)
        if self.together is not None:
            self.together.wait(timeout=600)   # ... and until both have rendered every batch
        return {"rows": self.batches}


def _jobs(n: int) -> list:
    from synthfer.plan import Shard
    from synthfer.worker import Job
    return [Job(Shard(index=i, identities=(i,), split="train")) for i in range(n)]


def test_lanes_split_the_cores_and_report_on_the_main_thread(monkeypatch):
    from synthfer.executors import core
    from synthfer.executors.local import LanesBackend

    monkeypatch.setattr(runtime, "cores", lambda: 2)
    reporter = _Reporter()
    worker = _FakeWorker(reporter, together=threading.Barrier(2))
    failed, committed = core.run(LanesBackend(worker, "out", 2), _jobs(2), reporter, retries=0)
    assert not failed and sorted(committed) == [0, 1]
    assert worker.threads == {0: {1}, 1: {1}}           # two shards in flight: a core each
    assert worker.on_batch == reporter.rendered and worker.before_batch is None   # hooks handed back
    for index in (0, 1):
        mine = [e for e in reporter.events if e[1] == index]
        assert mine == [("rendered", index, True)] * 3 + [("committed", index, True)]

    alone = _FakeWorker(reporter)
    core.run(LanesBackend(alone, "out", 2), _jobs(1), reporter, retries=0)
    assert alone.threads == {0: {2}}                    # a lane alone takes every core


def test_an_aborted_build_abandons_the_shard_being_rendered():
    from concurrent.futures import wait

    from synthfer.errors import InterruptedBuild
    from synthfer.executors.local import LanesBackend

    reporter = _Reporter()
    worker = _FakeWorker(reporter, batches=10 ** 6)    # seconds of batches unless abandoned at the next one
    backend = LanesBackend(worker, "out", 2)
    backend.submit(_jobs(1)[0])
    future = next(iter(backend.running))
    while not worker.threads:                          # it is rendering
        threading.Event().wait(0.01)
    backend.close(abort=True)
    wait([future])
    with pytest.raises(InterruptedBuild):
        future.result()


def test_two_lanes_making_the_same_new_folder_both_succeed(tmp_path):
    # Two lanes commit their first shards in step, so both may find data/ missing and make it at
    # once; the loser must take the folder the winner made, not fail (and re-render) its shard.
    from synthfer.io.local_folder import LocalFolder

    for trial in range(40):
        folder = LocalFolder(tmp_path / f"out{trial}")
        folder.ensure()
        start, errors = threading.Barrier(2), []

        def commit(name):
            start.wait()
            try:
                folder.write_all([(f"data/{name}.tar", b"x"), (f"_synthfer/parts/{name}.parquet", b"y")])
            except OSError as err:
                errors.append(err)

        lanes = [threading.Thread(target=commit, args=(f"train-00000{i}",)) for i in range(2)]
        for t in lanes:
            t.start()
        for t in lanes:
            t.join()
        assert errors == [], errors
        assert sorted(p.name for p in (folder.root / "data").iterdir()) == ["train-000000.tar", "train-000001.tar"]
