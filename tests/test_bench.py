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


def test_a_gpu_run_is_printed_with_its_figures_and_no_cpu_verdict(capsys):
    # What the GPU command in README prints, from children's results labelled as a GPU's (no GPU
    # here): every figure, "cuda-seconds per 1,000 accepted", and no PASS/MISS against the
    # 2-core CPU targets, which do not apply to a GPU.
    import importlib.util

    spec = importlib.util.spec_from_file_location("throughput_cli", REPO / "bench" / "throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    common = {"device": "cuda", "device_name": "Fake GPU 80GB", "torch": "2.13.0", "peak_rss_kib": 4096}
    runs = {"a": [dict(common, images=1000, seconds=10.0, images_per_s=100.0, batch_size=32)],
            "b": [dict(common, images=1000, seconds=12.5, images_per_s=80.0, device_s_per_1000_accepted=20.83,
                       identities=59, shards=30, accepted=600, load_s=3.0, finalize_s=0.2,
                       lanes={"lanes": 1, "torch_threads_each": 16})],
            "c": [dict(common, images=51, seconds=5.1, images_per_s=10.0)]}
    report = bench.phases_report(runs, 1024)
    assert report["targets"] is None and report["pass"] is None
    assert report["ratios"] == {"b/a": 0.8, "b/c": 8.0}
    report.update(size=1024, env={}, dtype="bfloat16", batch_size="auto", quick=False, rounds=1)
    bench.print_table(report)
    out = capsys.readouterr().out
    assert "device: cuda (Fake GPU 80GB)" in out
    assert "600 accepted (20.83 cuda-seconds per 1,000 accepted)" in out
    assert "b/a = 0.80   (no target on cuda: the targets are for a 2-core CPU;" in out
    assert "b/c = 8.00   (no target on cuda" in out
    assert "PASS" not in out and "MISS" not in out
    cpu = bench.phases_report({p: [dict(r, device="cpu") for r in rs] for p, rs in runs.items()}, 64)
    assert cpu["pass"] == {"b/a": True, "b/c": True} and cpu["targets"] == {"b/a": 0.75, "b/c": 3.0}
