"""Where shards are built changes no byte: Ray actors and per-device processes vs the local loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, dataset_files

DEMO = REPO / "recipes" / "demo.yaml"
SMALLER = ["--set", "identities.count=12", "--set", "output.samples_per_shard=120"]   # 6 shards


def _bytes(out: Path) -> dict[str, bytes]:
    return dataset_files(out)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    from typer.testing import CliRunner

    from synthfer.cli import app
    out = tmp_path_factory.mktemp("local") / "out"
    result = CliRunner().invoke(app, ["build", str(DEMO), "-q", "--output", str(out), *SMALLER])
    assert result.exit_code == 0, result.output
    return _bytes(out)


def test_ray_build_equals_local_build(cli, tmp_path, local_build):
    pytest.importorskip("ray")
    result = cli("build", DEMO, "--output", tmp_path / "ray", *SMALLER,
                 "--set", "execution.executor=ray", "--set", "execution.ray.workers=2")
    assert result.exit_code == 0, result.output
    assert "committed shard-000005" in result.stderr and "manifest rows" in result.stdout  # same progress + summary
    assert _bytes(tmp_path / "ray") == local_build


def test_one_process_per_device_equals_local_build(cli, tmp_path, local_build):
    result = cli("build", DEMO, "-q", "--output", tmp_path / "procs", *SMALLER, "--set", "execution.devices=[cpu, cpu]")
    assert result.exit_code == 0, result.output
    assert _bytes(tmp_path / "procs") == local_build


def test_a_corrected_build_is_the_same_on_ray_and_locally(cli, tmp_path):
    pytest.importorskip("ray")
    corrected = [*SMALLER, "--set", "identities.count=6", "--set", "correction.mode=both", "--set",
                 "correction.steps=2", "--set", "correction.pilot_identities=2"]
    local = cli("build", DEMO, "-q", "--output", tmp_path / "local", *corrected)
    assert local.exit_code == 0, local.output
    ray = cli("build", DEMO, "-q", "--output", tmp_path / "ray", *corrected,
              "--set", "execution.executor=ray", "--set", "execution.ray.workers=2")
    assert ray.exit_code == 0, ray.output
    assert _bytes(tmp_path / "ray") == _bytes(tmp_path / "local")
    assert (tmp_path / "ray" / "calibration.json").read_bytes() == (tmp_path / "local" / "calibration.json").read_bytes()


def test_devices_must_be_one_kind(cli):
    result = cli("validate", DEMO, "--set", "execution.devices=[cpu, cuda:0]")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("Error: --set execution.devices=[cpu, cuda:0]: execution.devices: must all be "
                                     "of one type (all cuda:N or all cpu), got ['cpu', 'cuda:0']")


def test_device_workers_end_when_their_build_is_killed(tmp_path):
    # SIGKILL leaves the driver no time to stop its workers: they must end on their own, or they
    # keep committing into an output whose lock the next build holds.
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "synthfer", "build", str(DEMO), "--output", str(tmp_path / "out"),
                             "--log-format", "json", "--set", "identities.count=48", "--set",
                             "output.samples_per_shard=116", "--set", "execution.devices=[cpu, cpu]"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))

    def workers() -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    spawned = b"spawn_main" in f.read()
            except (OSError, ValueError):
                continue
            if ppid == proc.pid and spawned:
                found.append(int(entry))
        return found

    try:
        for line in proc.stdout:   # the first commit: the workers are up and building
            if json.loads(line).get("event") == "shard_committed":
                break
        children = workers()
        assert len(children) >= 2, children
        proc.kill()
        proc.wait(60)
        deadline = time.monotonic() + 120   # a hang guard only: the kernel ends them at once on Linux
        while any(os.path.exists(f"/proc/{pid}") for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
        for pid in alive:
            os.kill(pid, signal.SIGKILL)
        assert alive == []
    finally:
        proc.kill()
        proc.stdout.close()
