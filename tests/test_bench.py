"""bench/throughput.py --quick runs end to end (CI). Numbers are reported, never asserted against
targets here: timings depend on the machine and on whatever else runs on it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO


def test_throughput_quick_json():
    # Smoke test only (the figures are bench/'s job): a couple of shards' worth of images.
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "throughput.py"), "--quick", "--json", "--device", "cpu",
                           "--samples", "170", "--baseline-samples", "17", "--samples-per-shard", "85"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["size"] == 64 and report["quick"] is True and report["device"] == "cpu"
    for phase in ("a", "b", "c"):
        run = report["phases"][phase]
        assert run["images"] > 0 and run["seconds"] > 0 and run["images_per_s"] > 0, (phase, run)
        assert run["peak_rss_kib"] > 0, (phase, run)
    assert report["phases"]["b"]["images"] == report["phases"]["b"]["identities"] * 17
    assert report["phases"]["c"]["includes_assessment"] is True
    rounds = report["ratios_rounds"]
    assert report["rounds"] == len(rounds) == 1
    for ratio in ("b/a", "b/c"):
        assert report["ratios"][ratio] > 0
        assert report["ratios"][ratio] == rounds[0][ratio] > 0
        assert isinstance(report["pass"][ratio], bool)
        assert report["targets"][ratio] > 0
    assert report["batch_size"] == "auto" and report["batch_size_used"] == 16
    assert report["device_name"] and report["torch"]


def test_throughput_cuda_without_a_gpu_is_one_line_before_any_work():
    # The GPU command in docs/performance.md, run where torch sees no CUDA device: an argparse
    # error (exit 2) before the 1024 px models are written, not a phase's traceback.
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    for extra, says in ((["--device", "cuda"], "--device cuda: "),
                        (["--dtype", "bfloat16"], "--device cuda (for --dtype bfloat16): ")):
        proc = subprocess.run([sys.executable, str(REPO / "bench" / "throughput.py"), "--size", "1024", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.splitlines()[-1] == f"throughput.py: error: {says}torch sees no CUDA device here"
        assert "writing" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
