"""What a person sees while a build runs, and the small things a first-time user hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

from tests.conftest import REPO

# 6 identities x 5 targets in 2 shards of 15 samples, batch 2: each shard takes 8 batches.
SEVERAL_BATCHES = """\
name: batches
seed: 3
identities: {count: 6}
targets: {emotions: [happy, sad], intensities: [0.5, 1.0], neutral: true}
output: {dir: out, samples_per_shard: 15, image: {format: png, size: 16}, splits: {train: 0.5, val: 0.5, test: 0}}
execution: {device: cpu, batch_size: 2}
"""


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_json_progress_comes_per_batch_before_the_first_commit(cli, write_recipe):
    result = cli("build", write_recipe(SEVERAL_BATCHES), "--log-format", "json")
    assert result.exit_code == 0, result.output
    events = _events(result.stdout)
    kinds = [e["event"] for e in events]
    assert [e["message"] for e in events[:2]] == ["starting (importing torch) ...",
                                                  "loading models (generator, editor) ..."]
    first_commit = kinds.index("shard_committed")
    progress = [e for e in events[:first_commit] if e["event"] == "progress"]
    assert progress, kinds                       # the first batch reports at once, before any commit
    first = progress[0]
    assert 0 < first["samples_done"] < 15 and first["samples_total"] == 30
    assert first["images_per_s"] > 0 and first["eta_s"] is not None
    started = events[kinds.index("started")]
    assert started["message"] == "building 2 shards (30 samples planned in them)"


def test_a_resume_and_a_finished_build_say_what_they_found(cli, write_recipe):
    recipe = write_recipe(SEVERAL_BATCHES)
    partial = cli("build", recipe, "--shards", "0")
    assert partial.exit_code == 0
    assert "no: run it again without --shards to finish" in partial.stdout
    resumed = cli("build", recipe)
    assert "checking 1 committed shard (sha256) ..." in resumed.stderr
    assert "resuming: 1 of 2 shards already committed and verified; building 1 (30 samples planned in all 2)" \
        in resumed.stderr
    again = cli("build", recipe)
    assert "nothing to build: all 2 shards are already committed and verified" in again.stderr
    assert "building 0" not in again.stderr


def test_the_report_of_a_partial_build_says_so(cli, write_recipe, tmp_path):
    recipe = write_recipe(SEVERAL_BATCHES)
    assert cli("build", recipe, "-q", "--shards", "0").exit_code == 0
    result = cli("report", tmp_path / "out", "--no-sheets")
    assert result.exit_code == 0, result.output
    line = "Partial build: 1 of 2 shards committed; these tables cover only those (run the build again to finish it)."
    assert f"Warning: {line}" in result.stderr
    assert line in (tmp_path / "out" / "report" / "metrics.md").read_text()


def test_usage_mistakes_are_one_line_and_flags_take_no_value(write_recipe):
    recipe = write_recipe(SEVERAL_BATCHES)
    proc = subprocess.run([sys.executable, "-m", "synthfer", "build", str(recipe), "--quiet", "false"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Got unexpected extra argument(s) (false)" in proc.stderr
    assert proc.stderr.startswith("Error: ") and "build --help)" in proc.stderr
    help_text = subprocess.run([sys.executable, "-m", "synthfer", "build", "--help"], capture_output=True, text=True,
                               cwd=REPO, env={"COLUMNS": "120", "PATH": ""}).stdout
    flags = [line for line in help_text.splitlines() if any(f in line for f in ("--quiet", "--strict", "--report"))]
    assert len(flags) == 3 and not any("<bool>" in line for line in flags), flags


def test_jpeg_is_jpg(cli, write_recipe):
    jpg = cli("plan", write_recipe(SEVERAL_BATCHES.replace("png", "jpg"), "a.yaml"))
    jpeg = cli("plan", write_recipe(SEVERAL_BATCHES.replace("png", "jpeg"), "b.yaml"))
    assert jpeg.exit_code == 0, jpeg.output
    assert jpg.stdout.replace("a.yaml", "") == jpeg.stdout.replace("b.yaml", "")


def test_models_info_reads_an_onnx_estimator(cli, tmp_path):
    from synthfer.models.builtin_onnx import va_model_bytes

    path = tmp_path / "va.onnx"
    path.write_bytes(va_model_bytes())
    result = cli("models", "info", path)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "onnx model (a quality or VA estimator)" in text and "input [N, 3, 256, 256]" in text
    assert "va [N, 2]" in text and "synthfer models check RECIPE" in text


def test_batch_size_auto_is_a_number_from_the_generator_and_recorded(cli, write_recipe, tmp_path):
    from synthfer import batching
    from synthfer.models.builtin import builtin_generator
    from synthfer.models.stylegan2 import Generator

    class ConfigF:   # a 1024 px config-f generator's widths, without its weights
        resolution, channels = 1024, Generator.channels_for(1024)
    assert batching.resolve("auto", builtin_generator(0, 64, 64), "cpu") == 16
    assert batching.resolve("auto", builtin_generator(0, 256, 64), "cpu") == 16
    assert batching.resolve("auto", ConfigF, "cpu") == 4          # ~525 MB of activations per image
    assert batching.resolve(3, ConfigF, "cpu") == 3
    bad = cli("validate", write_recipe(SEVERAL_BATCHES.replace("batch_size: 2", "batch_size: big"), "c.yaml"))
    assert bad.exit_code == 2 and bad.stderr.strip().endswith(
        "execution.batch_size: must be auto or a whole number from 1 to 4096, got 'big'")
    auto = cli("build", write_recipe(SEVERAL_BATCHES.replace("batch_size: 2", "batch_size: auto"), "a.yaml"),
               "--output", tmp_path / "auto")
    assert auto.exit_code == 0, auto.output
    assert "batch size 16 (auto: cpu, 64 px generator)" in auto.stderr
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert run["runtime"]["batch_size"] == 16 and run["runtime"]["batch_size_asked"] == "auto"
    assert run["recipe"]["execution"]["batch_size"] == 16
    assert run["runtime"]["allocator"]["allocator"].startswith(("glibc", "unchanged"))
    fixed = cli("build", write_recipe(SEVERAL_BATCHES.replace("batch_size: 2", "batch_size: 16"), "b.yaml"),
                "-q", "--output", tmp_path / "fixed")
    assert fixed.exit_code == 0
    # auto resolved to 16 is the build a recipe saying 16 makes: same fingerprint, same bytes
    assert json.loads((tmp_path / "fixed" / "run.json").read_text())["fingerprint"] == run["fingerprint"]
    assert (tmp_path / "fixed" / "manifest.parquet").read_bytes() == (tmp_path / "auto" / "manifest.parquet").read_bytes()


def test_png_level_changes_file_bytes_never_pixels(cli, write_recipe, tmp_path):
    import io

    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    fast = SEVERAL_BATCHES.replace("size: 16}", "size: 16, png_level: 0}")   # stored, not compressed
    assert cli("build", write_recipe(SEVERAL_BATCHES, "a.yaml"), "-q", "--output", tmp_path / "six").exit_code == 0
    assert cli("build", write_recipe(fast, "b.yaml"), "-q", "--output", tmp_path / "one").exit_code == 0
    def pngs(out):
        found = {}
        for tar_path in sorted((out / "data").glob("*.tar")):
            with tarfile.open(tar_path) as tar:
                found.update({m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".png")})
        return found
    six, one = pngs(tmp_path / "six"), pngs(tmp_path / "one")
    assert six.keys() == one.keys() and six
    assert all(np.array_equal(np.asarray(Image.open(io.BytesIO(six[k]))), np.asarray(Image.open(io.BytesIO(one[k]))))
               for k in six)
    assert sum(map(len, one.values())) > sum(map(len, six.values()))
    rows = pq.read_table(tmp_path / "one" / "manifest.parquet").column("image_sha256").to_pylist()
    assert rows != pq.read_table(tmp_path / "six" / "manifest.parquet").column("image_sha256").to_pylist()


def test_the_sample_count_survives_retries_and_top_up_rounds():
    from types import SimpleNamespace

    from synthfer.progress import _Counter

    a, b = SimpleNamespace(index=0), SimpleNamespace(index=1)
    counter = _Counter(20, 0)
    counter.batch(a, 4)
    counter.batch(a, 4)
    counter.retry(a)                     # shard 0 failed after two batches: they no longer count
    assert counter.done == 0
    counter.batch(a, 4)
    counter.batch(b, 4)
    assert counter.commit(a, 10) == 6    # the commit adds what batches did not (skipped samples, the rest)
    counter.grow(10)                     # a quota top-up round plans 10 more
    assert counter.commit(b, 10) == 6
    assert (counter.done, counter.total) == (20, 30) and counter.eta_s() is not None


def test_the_cli_lets_idle_openmp_threads_sleep_unless_told_otherwise(write_recipe, tmp_path):
    """OMP_WAIT_POLICY must be in the environment before torch loads: only the CLI's own process
    can set it, and run.json says what the build ran with."""
    recipe = write_recipe(SEVERAL_BATCHES)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "SYNTHFER_LANES")}
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        out = tmp_path / f"out-{expected}"
        proc = subprocess.run([sys.executable, "-m", "synthfer", "build", str(recipe), "-q", "--output", str(out)],
                              env=env if given is None else dict(env, OMP_WAIT_POLICY=given),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        run = json.loads((out / "run.json").read_text())["runtime"]
        assert run["omp_wait_policy"] == expected
        # the CLI sets the allocator before anything else: a CPU build with cores to spare has two lanes
        assert run["lanes"]["lanes"] == (2 if run["cores"] >= 2 else 1), run["lanes"]


def test_encoding_takes_every_core_only_while_the_generator_is_idle(monkeypatch):
    import threading

    from synthfer import runtime

    monkeypatch.setattr(runtime, "cores", lambda: 4)
    inside = threading.Condition()
    state = {"now": 0, "max": 0, "want": 0}

    def encode():
        with runtime.side_slot():
            with inside:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
                inside.notify_all()
                # hold the slot until as many encodes as allowed have been inside at once (or a
                # generous while): the gate letting fewer through shows as a lower peak
                inside.wait_for(lambda: state["max"] >= state["want"], timeout=30)
            with inside:
                state["now"] -= 1

    def peak(want: int, n: int = 8) -> int:
        state.update(max=0, want=want)
        threads = [threading.Thread(target=encode) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return state["max"]

    with runtime.generating():
        assert peak(2) == 2         # half the cores beside the generator
    assert peak(4) == 4             # every core in the last shard's tail


def test_heap_is_trimmed_only_once_rss_outgrows_the_first_shard(monkeypatch):
    """runtime.release(): the first call (after the first shard's commit) records the working
    set; later calls trim only when RSS is more than RSS_SLACK above it, so a steady build does
    not hand its batches' pages back to be faulted in again."""
    from synthfer import runtime

    trims = []
    monkeypatch.setattr(runtime, "_state", {"allocator": {"allocator": "glibc 2.36"}})
    monkeypatch.setattr(runtime, "_libc", lambda: type("libc", (), {"malloc_trim": staticmethod(trims.append)}))
    readings = iter([1000, 1040, 1049, 1051, 1200, 990])
    monkeypatch.setattr(runtime, "_rss_bytes", lambda: next(readings))
    done = []
    for _ in range(6):
        runtime.release()
        done.append(len(trims))
    assert done == [0, 0, 0, 1, 2, 2]      # 1000 recorded; 1051 and 1200 are past 1000 * 1.05
    assert runtime.RSS_SLACK == 1.05

    monkeypatch.setattr(runtime, "_state", {"allocator": {"allocator": "glibc 2.36"}})
    monkeypatch.setattr(runtime, "_rss_bytes", lambda: None)   # no /proc: trim every time, as before
    runtime.release()
    runtime.release()
    assert len(trims) == 4
    monkeypatch.setattr(runtime, "_state", {"allocator": {"allocator": "unchanged"}})
    runtime.release()
    assert len(trims) == 4                  # SYNTHFER_MALLOC=default or not glibc: nothing to trim
