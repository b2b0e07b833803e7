"""Cron-grade behaviour: kills, locks, fingerprints, extend, corruption, retries, write errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path


from synthfer.io.local_folder import LocalFolder
from synthfer.io.layout import CURRENT
from synthfer.io.lock import output_lock
from synthfer.io.verify import verify
from synthfer.worker import Worker
from tests.conftest import PARTS, SMALL, dataset_files, error_lines

# 8 identities, 5 targets, 1 identity per shard: 8 shards, so a kill lands between commits too.
EIGHT = SMALL.replace("count: 4", "count: 8").replace("samples_per_shard: 10", "samples_per_shard: 5")
REPO = Path(__file__).resolve().parents[1]


def _dataset_bytes(out: Path) -> dict[str, bytes]:
    return dataset_files(out)


def _committed_are_whole(out: Path) -> None:
    """What a reader can see (shards with a marker) is complete, whatever moment the kill hit."""
    from synthfer.io.shards import ShardStore
    store = ShardStore(LocalFolder(out))
    for index in store.marker_indices():
        assert store.problem(index, store.read_marker(index), hashes=True) is None, index


HANG_GUARD_S = 900   # only against a hung child; correctness never depends on how long a step takes


def _run(recipe: Path, *args: str, kill: tuple[str, str, str] | None = None) -> subprocess.Popen:
    """`synthfer build --quiet` in a child process, optionally with a kill point (tests/killpoints.py)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    prefix = ["-m", "tests.killpoints", *kill, "--"] if kill else ["-m", "synthfer"]
    return subprocess.Popen([sys.executable, *prefix, "build", str(recipe), "--quiet", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=recipe.parent)


def _wait(proc: subprocess.Popen) -> int:
    return proc.wait(HANG_GUARD_S)


def test_sigterm_abandons_cleanly(write_recipe, tmp_path):
    recipe = write_recipe(EIGHT.replace("count: 8", "count: 40"))
    # SIGTERM right after the first shard's commit: mid-build, more to come
    proc = _run(recipe, kill=("synthfer.io.shards:ShardStore.commit", "after", "1:SIGTERM"))
    assert _wait(proc) == 143
    assert proc.stderr.read().decode().strip().endswith("run again to finish")
    _committed_are_whole(tmp_path / "out")
    assert 1 <= len(list((tmp_path / "out" / PARTS).glob("*.done.json"))) < 40
    assert _wait(_run(recipe)) == 0
    assert verify(tmp_path / "out")[0] == []


def test_a_second_build_on_a_locked_output_exits_75(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    (tmp_path / "out").mkdir()
    with output_lock(LocalFolder(tmp_path / "out"), CURRENT):
        result = cli("build", recipe)
    assert result.exit_code == 75
    assert error_lines(result.stderr)[0].startswith(
        f"Error: {tmp_path / 'out'}: another build holds the lock (pid {os.getpid()} on ")
    assert cli("build", recipe, "-q").exit_code == 0   # released: no obstacle any more


def test_changed_recipe_is_refused_then_overwritten(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    assert cli("build", recipe, "-q").exit_code == 0
    refused = cli("build", recipe, "-q", "--set", "targets.intensities=[0.5]")
    assert refused.exit_code == 2
    assert "(recipe.targets.intensities: [0.5, 1.0] -> [0.5]); use --mode overwrite" in refused.stderr
    done = cli("build", recipe, "-q", "--set", "targets.intensities=[0.5]", "--mode", "overwrite")
    assert done.exit_code == 0, done.output
    fresh = cli("build", recipe, "-q", "--set", "targets.intensities=[0.5]", "--output", tmp_path / "fresh")
    assert fresh.exit_code == 0
    assert _dataset_bytes(tmp_path / "out") == _dataset_bytes(tmp_path / "fresh")


def test_extend_keeps_old_shards_byte_identical(cli, write_recipe, tmp_path):
    recipe = write_recipe(EIGHT)
    assert cli("build", recipe, "-q", "--set", "identities.count=3").exit_code == 0
    before = _dataset_bytes(tmp_path / "out")
    refused = cli("build", recipe, "-q")
    assert refused.exit_code == 2 and "(recipe.identities.count: 3 -> 8); use --mode extend" in refused.stderr
    assert cli("build", recipe, "-q", "--mode", "extend").exit_code == 0
    after = _dataset_bytes(tmp_path / "out")
    for name in before:
        if name != "manifest.parquet":
            assert after[name] == before[name], name
    assert cli("build", recipe, "-q", "--output", tmp_path / "fresh").exit_code == 0
    assert after == _dataset_bytes(tmp_path / "fresh")


def test_corrupted_shard_is_found_by_verify_and_rebuilt(cli, write_recipe, tmp_path):
    recipe = write_recipe(SMALL)
    assert cli("build", recipe, "-q").exit_code == 0
    good = _dataset_bytes(tmp_path / "out")
    tar = tmp_path / "out" / "data" / "val-000001.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF   # same size: only the sha256 can tell
    tar.write_bytes(bytes(data))
    result = cli("verify", tmp_path / "out")
    assert result.exit_code == 1
    assert "Problem: shard-000001: data/val-000001.tar does not match its sha256" in result.stderr
    rebuilt = cli("build", recipe)
    assert rebuilt.exit_code == 0
    assert "shard-000001: data/val-000001.tar does not match its sha256: rebuilding it" in rebuilt.stderr
    assert cli("verify", tmp_path / "out").exit_code == 0
    assert _dataset_bytes(tmp_path / "out") == good


def _failing_compute(monkeypatch, shard_name: str, times: int):
    real = Worker.compute
    calls = {"n": 0}

    def compute(self, job):
        if job.shard.name == shard_name and calls["n"] < times:
            calls["n"] += 1
            raise RuntimeError(f"injected failure {calls['n']}")
        return real(self, job)
    monkeypatch.setattr(Worker, "compute", compute)
    return calls


def test_a_failing_shard_is_retried(cli, write_recipe, monkeypatch, tmp_path):
    calls = _failing_compute(monkeypatch, "shard-000001", times=2)
    result = cli("build", write_recipe(SMALL), "--log-format", "json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    retried = [e for e in events if e["event"] == "shard_retried"]
    assert calls["n"] == 2 and [e["attempt"] for e in retried] == [1, 2]
    assert retried[0]["error"] == "RuntimeError: injected failure 1"
    assert events[-1]["event"] == "summary" and events[-1]["complete"] is True


def test_shards_failing_every_retry_end_in_exit_3(cli, write_recipe, monkeypatch, tmp_path):
    _failing_compute(monkeypatch, "shard-000000", times=100)
    result = cli("build", write_recipe(EIGHT), "--set", "execution.retries=1")
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 1 of 8 shards failed after 1 retries: shard-000000: RuntimeError: injected failure 2")
    assert "manifest rows" in result.stdout   # the summary still shows
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert info["counts"]["complete"] is False and info["counts"]["manifest_rows"] == 7 * 5
    assert verify(tmp_path / "out")[0] == []   # the manifest covers exactly the committed shards
    monkeypatch.undo()
    assert cli("build", write_recipe(EIGHT), "-q").exit_code == 0   # the next run finishes the job


def test_disk_full_stops_the_build_and_keeps_committed_shards(cli, write_recipe, monkeypatch, tmp_path):
    from synthfer.io import writer as writer_module
    real = writer_module.tar_bytes
    calls = {"n": 0}

    def tar_bytes(members):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(members)
    monkeypatch.setattr(writer_module, "tar_bytes", tar_bytes)
    result = cli("build", write_recipe(EIGHT))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'out'}: write failed: No space left on device; committed shards are intact")
    _committed_are_whole(tmp_path / "out")
    assert len(list((tmp_path / "out" / PARTS).glob("*.done.json"))) == 2
