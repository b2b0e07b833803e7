"""Throughput: raw generator vs a synthfer build vs an EmoStyle-style baseline, on the same models.

In one run, on the same models, device and dtype:

  a  raw generator: seeded z -> mapping (psi 0.7) -> synthesis, batched, under inference_mode;
     nothing else (no edit, no uint8, no copy off the device); one warm-up batch not timed.
  b  synthfer build: `synthfer.build.build()` of a recipe written to a temporary folder (the
     demo's targets and filters: 8 emotions x 2 intensities + neutral = 17 targets per identity,
     quality + identity + VA assessment, PNG shards at the generator's resolution); timed from
     the build's `started` event to its `finished` event, so model loading and the final
     manifest merge are left out; images = generated samples.
  c  baseline like the original EmoStyle toolkit: per identity both models are re-created and
     their weights torch.load()ed again, then one image at a time with autograd on: the editor's
     per-layer Python loop (`forward_loop`), synthesis, to_uint8 and a synchronous PIL PNG save;
     each image is also assessed on its own (the same ONNX models as b, batch 1), so c does the
     same work per image as b. Fewer images than a and b (whole identities, about 64 by default).

Each phase runs in its own subprocess (this script with --phase), so its peak RSS is its own.
Phases alternate a, b, c for --rounds rounds (default 2; --quick and 1024: 1) and the fastest run of each
is kept (other processes only ever slow a run down); peak RSS is the largest of the rounds.
Ratios b/a and b/c are printed with the targets for a 2-core CPU (b/a >= 0.8, b/c >= 3).
--rss-scaling instead builds b at 1,000 and 10,000 samples (--quick: 1,000 and 3,000) and
compares the two peak RSS values (target: the larger within 10% of the smaller).

    python bench/throughput.py [--size {64,256,1024}] [--device {auto,cpu,cuda}]
        [--dtype {float32,bfloat16,float16}] [--batch-size 16] [--samples N]
        [--baseline-samples N] [--rounds 2] [--quick] [--rss-scaling] [--profile DIR] [--json]

Environment variables the children inherit (MALLOC_*, OMP_*, LD_PRELOAD ...) are part of the
result and printed with it: glibc's allocator settings change CPU numbers a lot.

Sizes: 64 = the builtin stand-in (64 px, channels <= 64); 256 = the builtin architecture at
256 px with channels capped at 64; 1024 = a full config-f StyleGAN2 (channel multiplier 2,
w 512, 30M parameters) and a full-size EmoStyle editor (73M parameters), random weights, given
to the build as a rosinality .pt and an emo_mapping_wplus .pt (2-3 s per image on a 2-core
CPU and ~9 GB of RAM at batch 16: use it on a GPU). float16/bfloat16 need a CUDA device
(autocast); c always runs in float32, as the original does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The same targets as every phase: 8 named directions (3 of them in the verified failure band)
# at two intensities, plus the unedited identity.
EMOTIONS = ["happy", "excited", "angry", "afraid", "sad", "bored", "tired", "calm"]
INTENSITIES = [0.5, 1.0]
TARGETS_PER_IDENTITY = len(EMOTIONS) * len(INTENSITIES) + 1
FILTERS = {"min_quality": 20, "min_identity_similarity": 0.6,  # the demo's filters
           "failure_bands": [{"from_deg": 242, "to_deg": 329, "action": "verify", "max_direction_error_deg": 45}]}
PSI = 0.7
CHANNEL_MAX = 64  # builtin sizes (64, 256)

# Default images per phase (a and b; c gets at most BASELINE_DEFAULT) and --quick counts, per
# size. With the default rounds on a 2-core CPU: about 1 min (64), 3 min (256), 4 min (1024).
DEFAULT_SAMPLES = {64: 3400, 256: 340, 1024: 17}
DEFAULT_SAMPLES_GPU = {64: 10000, 256: 4000, 1024: 1000}
QUICK_SAMPLES = {64: 680, 256: 34, 1024: 17}  # 64: two shards, so the writer overlaps
BASELINE_DEFAULT, BASELINE_QUICK = 64, 34
# output.samples_per_shard (20 / 10 / 2 identities): every default run has several shards, so
# the writer thread overlaps the next shard's generation as in a real build.
SHARD_SAMPLES = {64: 340, 256: 170, 1024: 34}
# --quick's small count still has 3 shards: a one-shard build has no writer overlap and so a
# lower peak, which would make the comparison look worse than it is.
RSS_COUNTS, RSS_COUNTS_QUICK = (1000, 10000), (1000, 3000)

TARGET_B_OVER_A, TARGET_B_OVER_C, TARGET_RSS_RATIO = 0.8, 3.0, 1.10

PHASE_LABELS = {
    "a": "a  raw generator (z -> image)",
    "b": "b  synthfer build (edit+assess+encode+write)",
    "c": "c  EmoStyle-style baseline (incl. assess)",
}


# ------------------------------------------------------------------------------------------------
# Children: one phase each, one JSON line on stdout.


def _peak_rss_kib() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes, Linux KiB


def _device(name: str, dtype: str):
    from synthfer.models.load import resolve_device

    device = resolve_device(name)
    if dtype != "float32" and device.type != "cuda":
        raise SystemExit(f"--dtype {dtype} runs under CUDA autocast only; this device is {device.type}")
    return device


def _device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores ({torch.get_num_threads()} torch threads)"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_files(workdir: Path) -> tuple[Path, Path]:
    return workdir / "models" / "generator-1024.pt", workdir / "models" / "editor-1024.pt"


def phase_prep(args) -> dict:
    """Size 1024: a random config-f generator and full-size editor, as files a recipe can name."""
    import torch

    from synthfer.models.emostyle import EmoMappingWplus
    from synthfer.models.stylegan2 import Generator, channels_for

    g_path, e_path = _model_files(args.workdir)
    g_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = Generator(1024, 512, 512, n_mlp=8, channels=channels_for(1024, channel_multiplier=2))
        editor = EmoMappingWplus()
    with torch.no_grad():
        generator.latent_avg.copy_(generator.mean_w(1024, seed=0))
    # rosinality's converted-checkpoint layout and EmoStyle's checkpoint layout
    torch.save({"g_ema": generator.state_dict(), "latent_avg": generator.latent_avg.clone()}, g_path)
    torch.save({"emo_mapping_state_dict": editor.state_dict()}, e_path)
    return {"generator": str(g_path), "editor": str(e_path)}


def _models(args):
    """The generator and editor every phase uses (CPU, eval)."""
    from synthfer.models import builtin, checkpoints

    if args.size == 1024:
        g_path, e_path = _model_files(args.workdir)
        return checkpoints.load_generator(g_path), checkpoints.load_editor(e_path)
    generator = builtin.builtin_generator(0, args.size, CHANNEL_MAX)
    return generator, builtin.builtin_editor(0, generator.n_latent, generator.w_dim)


def write_recipe(folder: Path, args, identities: int) -> Path:
    import yaml

    if args.size == 1024:
        g_path, e_path = _model_files(args.workdir)
        generator = {"kind": "stylegan2", "checkpoint": str(g_path)}
        editor = {"kind": "emostyle", "checkpoint": str(e_path)}
    else:
        generator = {"kind": "builtin", "seed": 0, "resolution": args.size, "channel_max": CHANNEL_MAX}
        editor = {"kind": "builtin", "seed": 0}
    recipe = {
        "name": f"throughput-{args.size}",
        "seed": 0,
        "identities": {"count": identities, "truncation_psi": PSI},
        "targets": {"emotions": EMOTIONS, "intensities": INTENSITIES, "neutral": True},
        "models": {"generator": generator, "editor": editor, "quality": {"kind": "builtin"}, "va": {"kind": "builtin"}},
        "filters": FILTERS,
        "output": {"dir": "out", "samples_per_shard": args.samples_per_shard or SHARD_SAMPLES[args.size],
                   "image": {"format": "png", "size": args.size}},
        "execution": {"device": args.device, "dtype": args.dtype, "batch_size": args.batch_size},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def phase_a(args) -> dict:
    """Raw generator: z -> w (psi 0.7) -> image, batched, inference_mode; warm-up excluded."""
    import contextlib

    import torch

    device = _device(args.device, args.dtype)
    generator, _ = _models(args)
    generator.eval().requires_grad_(False).to(device)
    if device.type == "cuda":
        generator.to(memory_format=torch.channels_last)  # as synthfer's loader does
    n, bs = args.count, args.batch_size
    rng = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(n + bs, generator.z_dim, generator=rng)
    autocast = (torch.autocast("cuda", dtype=getattr(torch, args.dtype)) if args.dtype != "float32"
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        generator.synthesis(generator.mapping(z[n:].to(device), truncation_psi=PSI))  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for start in range(0, n, bs):
            generator.synthesis(generator.mapping(z[start:min(start + bs, n)].to(device), truncation_psi=PSI))
        _sync(device)
        seconds = time.perf_counter() - t0
    return {"images": n, "seconds": seconds, "device": str(device), "device_name": _device_name(device),
            "resolution": generator.resolution,
            "parameters": {"generator": sum(p.numel() for p in generator.parameters())}}


def phase_b(args) -> dict:
    """A real synthfer build, timed from its `started` to its `finished` event."""
    from synthfer.build import build
    from synthfer.progress import Quiet
    from synthfer.recipe import load_recipe

    class Clock(Quiet):
        t_started = t_finished = None

        def started(self, shards, samples, already_done):
            self.t_started = time.perf_counter()

        def finished(self):
            self.t_finished = time.perf_counter()

    device = _device(args.device, args.dtype)
    identities = max(1, round(args.count / TARGETS_PER_IDENTITY))
    folder = Path(tempfile.mkdtemp(prefix=f"b-{args.count}-", dir=args.workdir))
    loaded = load_recipe(write_recipe(folder, args, identities))
    clock = Clock()
    t0 = time.perf_counter()
    if args.profile:
        result = _profiled_build(build, loaded, clock, Path(args.profile))
    else:
        result = build(loaded, reporter=clock)
    t_call = time.perf_counter() - t0
    assert result.complete, result
    shutil.rmtree(folder)
    skipped = result.by_status.get("skipped", 0)
    return {"images": result.planned_samples - skipped, "seconds": clock.t_finished - clock.t_started,
            "build_call_s": t_call, "load_s": clock.t_started - t0, "finalize_s": t0 + t_call - clock.t_finished,
            "identities": identities, "shards": result.planned_shards, "accepted": result.by_status.get("accepted", 0),
            "device": str(device), "device_name": _device_name(device)}


def _profiled_build(build, loaded, clock, prof_dir: Path):
    """cProfile of the main thread (model work) and of the writer thread (assess, encode, commit)."""
    import cProfile
    import pstats

    from synthfer import worker as worker_module

    writer = cProfile.Profile()
    finish = worker_module.Worker.finish

    def profiled_finish(self, computed, store):
        writer.enable()
        try:
            return finish(self, computed, store)
        finally:
            writer.disable()

    worker_module.Worker.finish = profiled_finish
    main = cProfile.Profile()
    try:
        result = main.runcall(build, loaded, reporter=clock)
    finally:
        worker_module.Worker.finish = finish
    prof_dir.mkdir(parents=True, exist_ok=True)
    for name, prof in (("main", main), ("writer", writer)):
        prof.dump_stats(prof_dir / f"b-{name}.prof")
        print(f"--- phase b, {name} thread, top 25 by own time ---", file=sys.stderr)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    return result


def phase_c(args) -> dict:
    """EmoStyle-toolkit style: models reloaded per identity, one image at a time, autograd on,
    the editor's per-layer loop, synchronous PNG save; plus per-image assessment (batch 1)."""
    import torch
    from PIL import Image

    from synthfer.models.checkpoints import read_onnx
    from synthfer.models.builtin_onnx import builtin_model_path
    from synthfer.models.emostyle import EmoMappingWplus
    from synthfer.models.layouts import editor_config, generator_config
    from synthfer.models.onnx import OnnxModel
    from synthfer.models.stylegan2 import Generator, to_uint8
    from synthfer.plan import Plan
    from synthfer.recipe import load_recipe
    from synthfer.stages.assess import Assessor

    device = _device(args.device, "float32")
    identities = max(1, round(args.count / TARGETS_PER_IDENTITY))
    folder = Path(tempfile.mkdtemp(prefix="c-", dir=args.workdir))
    recipe = load_recipe(write_recipe(folder, args, identities)).recipe
    targets = Plan(recipe).targets
    assert len(targets) == TARGETS_PER_IDENTITY, len(targets)
    generator, editor = _models(args)
    g_config, e_config = generator_config(generator), editor_config(editor)
    e_config["hidden"] = tuple(e_config["hidden"])
    g_file, e_file = folder / "generator.pt", folder / "editor.pt"
    torch.save(generator.state_dict(), g_file)
    torch.save(editor.state_dict(), e_file)
    del generator, editor
    q, va = recipe.models.quality, recipe.models.va

    def onnx(role, spec):
        return OnnxModel(read_onnx(builtin_model_path(role)), f"builtin {role} model", role, spec.preprocess.size,
                         str(device))

    assessor = Assessor(onnx("quality", q), q, onnx("va", va), va)
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator(device="cpu").manual_seed(0)
    n = 0
    t0 = time.perf_counter()
    for identity in range(identities):
        # The toolkit builds and loads its networks again for every identity.
        generator = Generator(**g_config)
        generator.load_state_dict(torch.load(g_file, map_location="cpu", weights_only=True))
        generator.to(device).eval()
        editor = EmoMappingWplus(**e_config)
        editor.load_state_dict(torch.load(e_file, map_location="cpu", weights_only=True))
        editor.to(device).eval()
        z = torch.randn(1, generator.z_dim, generator=rng).to(device)
        w = generator.mapping(z, truncation_psi=PSI)  # autograd on: graphs are built and dropped
        for target in targets:
            if target.is_neutral:
                ws = w
            else:
                va_t = torch.tensor([[target.valence, target.arousal]], dtype=torch.float32, device=device)
                ws = w + editor.forward_loop(w, va_t)
            pixels = to_uint8(generator.synthesis(ws).detach())
            Image.fromarray(pixels[0].cpu().numpy()).save(images_dir / f"{identity:07d}_{target.key}.png")
            assessor.measure(pixels, 1)
            n += 1
    _sync(device)
    seconds = time.perf_counter() - t0
    shutil.rmtree(folder)
    return {"images": n, "seconds": seconds, "identities": identities, "includes_assessment": True,
            "device": str(device), "device_name": _device_name(device)}


PHASES = {"prep": phase_prep, "a": phase_a, "b": phase_b, "c": phase_c}


def run_child(args) -> None:
    import torch

    args.workdir = Path(args.workdir)
    out = PHASES[args.phase](args)
    if "images" in out:
        out["images_per_s"] = out["images"] / out["seconds"] if out["seconds"] > 0 else 0.0
    out.update(phase=args.phase, peak_rss_kib=_peak_rss_kib(), torch=torch.__version__)
    print(json.dumps(out), flush=True)


# ------------------------------------------------------------------------------------------------
# Parent: runs the children, prints the table / JSON. Imports no torch, so it stays small.


def spawn(args, phase: str, count: int, workdir: Path, profile: str | None = None, note: str = "") -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", phase, "--count", str(count),
           "--workdir", str(workdir), "--size", str(args.size), "--device", args.device, "--dtype", args.dtype,
           "--batch-size", str(args.batch_size)]
    if args.samples_per_shard:
        cmd += ["--samples-per-shard", str(args.samples_per_shard)]
    if profile:
        cmd += ["--profile", profile]
    if not args.json:
        print(f"... phase {phase} ({count} images){note}" if phase != "prep" else "... writing the 1024 px models",
              file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"phase {phase} failed (exit {proc.returncode})")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def _mb(kib: int) -> float:
    return kib / 1024


def _rounds(run: dict) -> str:
    return " ".join(f"{v:.1f}" for v in run["all_images_per_s"])


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _uses_cuda(device: str) -> bool:
    if device != "auto":
        return device == "cuda"
    import torch  # only to resolve "auto" as the children will

    return torch.cuda.is_available()


def best_of(runs: list[dict]) -> dict:
    """The fastest run (other processes only ever slow a run down), with the largest peak RSS of
    all runs and every run's images/s."""
    best = dict(max(runs, key=lambda r: r["images_per_s"]))
    best["peak_rss_kib"] = max(r["peak_rss_kib"] for r in runs)
    best["all_images_per_s"] = [round(r["images_per_s"], 2) for r in runs]
    for key in ("device_name", "torch", "phase"):
        best.pop(key, None)
    return best


def run_phases(args, workdir: Path) -> dict:
    gpu = _uses_cuda(args.device)
    if args.quick:
        n = args.samples or QUICK_SAMPLES[args.size]
        n_c = args.baseline_samples or min(n, BASELINE_QUICK)
    else:
        n = args.samples or (DEFAULT_SAMPLES_GPU if gpu else DEFAULT_SAMPLES)[args.size]
        n_c = args.baseline_samples or min(n, BASELINE_DEFAULT)
    if args.size == 1024:
        spawn(args, "prep", 0, workdir)
    runs: dict[str, list[dict]] = {"a": [], "b": [], "c": []}
    for r in range(args.rounds):  # alternating, so every phase sees the same machine state
        for p, count in (("a", n), ("b", n), ("c", n_c)):
            profile = args.profile if p == "b" and r == 0 else None
            runs[p].append(spawn(args, p, count, workdir, profile, f" round {r + 1}/{args.rounds}"))
    phases = {p: best_of(rs) for p, rs in runs.items()}
    a, b, c = (phases[p]["images_per_s"] for p in "abc")
    ratios = {"b/a": b / a if a else None, "b/c": b / c if c else None}
    first = runs["b"][0]
    return {
        "phases": phases,
        "ratios": ratios,
        "targets": {"b/a": TARGET_B_OVER_A, "b/c": TARGET_B_OVER_C},
        "pass": {"b/a": ratios["b/a"] is not None and ratios["b/a"] >= TARGET_B_OVER_A,
                 "b/c": ratios["b/c"] is not None and ratios["b/c"] >= TARGET_B_OVER_C},
        "device": first["device"], "device_name": first["device_name"], "torch": first["torch"],
    }


def run_rss_scaling(args, workdir: Path) -> dict:
    small, large = RSS_COUNTS_QUICK if args.quick else RSS_COUNTS
    if args.size == 1024:
        spawn(args, "prep", 0, workdir)
    runs: dict[str, list[dict]] = {str(small): [], str(large): []}
    for r in range(args.rounds):
        for n in (small, large):
            runs[str(n)].append(spawn(args, "b", n, workdir, None, f" round {r + 1}/{args.rounds}"))
    best = {k: best_of(v) for k, v in runs.items()}
    ratio = best[str(large)]["peak_rss_kib"] / best[str(small)]["peak_rss_kib"]
    first = runs[str(small)][0]
    return {"rss_scaling": {"samples": [small, large], "runs": best,
                            "ratio": ratio, "target": TARGET_RSS_RATIO, "pass": ratio <= TARGET_RSS_RATIO},
            "device": first["device"], "device_name": first["device_name"], "torch": first["torch"]}


def describe_size(size: int) -> str:
    return {64: "64 px builtin (channels <= 64)", 256: "256 px builtin architecture, channels <= 64",
            1024: "1024 px config-f StyleGAN2 + full EmoStyle editor (random weights)"}[size]


def print_table(report: dict) -> None:
    print(f"synthfer throughput: {describe_size(report['size'])}; {report['dtype']}, batch {report['batch_size']}; "
          f"best of {report['rounds']} round(s)" + (" (--quick)" if report["quick"] else ""))
    print(f"device: {report['device']} ({report['device_name']}); torch {report['torch']}"
          + "".join(f"; {k}={v}" for k, v in report["env"].items()))
    if report["size"] == 1024 and report["device"] == "cpu":
        print("note: 1024 px on a CPU is slow (about 1.6 s per image on 2 cores); counts are kept tiny")
    header = f"{'phase':<46}{'images':>8}{'seconds':>10}{'images/s':>10}{'peak RSS MB':>13}   images/s per round"
    if "phases" in report:
        print(header)
        for p in "abc":
            r = report["phases"][p]
            print(f"{PHASE_LABELS[p]:<46}{r['images']:>8}{r['seconds']:>10.2f}{r['images_per_s']:>10.1f}"
                  f"{_mb(r['peak_rss_kib']):>13.1f}   {_rounds(r)}")
        b = report["phases"]["b"]
        print(f"b: {b['identities']} identities x {TARGETS_PER_IDENTITY} targets in {b['shards']} shards, "
              f"{b['accepted']} accepted; model loading {b['load_s']:.1f} s and finalize {b['finalize_s']:.1f} s "
              f"not timed")
        print("c: one image at a time, autograd on, models reloaded per identity, PIL PNG save, and the "
              "same assessment as b (batch 1); always float32")
        for key in ("b/a", "b/c"):
            value = report["ratios"][key]
            print(f"{key} = {value:.2f}   (target >= {report['targets'][key]:g} on a 2-core CPU: "
                  f"{_verdict(report['pass'][key])})")
    if "rss_scaling" in report:
        s = report["rss_scaling"]
        print(f"peak RSS of phase b vs samples{' (--quick counts)' if report['quick'] else ''}:")
        print(header.replace("phase   ", "samples "))
        for n in s["samples"]:
            r = s["runs"][str(n)]
            print(f"{'b at ' + str(n):<46}{r['images']:>8}{r['seconds']:>10.2f}{r['images_per_s']:>10.1f}"
                  f"{_mb(r['peak_rss_kib']):>13.1f}   {_rounds(r)}")
        print(f"RSS ratio {s['samples'][1]} / {s['samples'][0]} = {s['ratio']:.3f}   "
              f"(target <= {s['target']:.2f}: {_verdict(s['pass'])})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, choices=(64, 256, 1024), default=64,
                    help="64: builtin; 256: builtin architecture, channels <= 64; 1024: full config-f")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                    help="a: CUDA autocast; b: execution.dtype; c stays float32")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--samples", type=int, default=None,
                    help=f"images for a and b (default per size: CPU {DEFAULT_SAMPLES}, cuda {DEFAULT_SAMPLES_GPU})")
    ap.add_argument("--baseline-samples", type=int, default=None,
                    help=f"images for c, rounded to whole identities of {TARGETS_PER_IDENTITY} "
                         f"(default min(samples, {BASELINE_DEFAULT}))")
    ap.add_argument("--samples-per-shard", type=int, default=None,
                    help=f"b's output.samples_per_shard (default per size: {SHARD_SAMPLES})")
    ap.add_argument("--rounds", type=int, default=None,
                    help="run every phase this many times, alternating, and keep the fastest (peak RSS: "
                         "the largest); default 2, --quick and --size 1024: 1")
    ap.add_argument("--quick", action="store_true", help="small counts (CI): about 30 s at 64 px on 2 cores")
    ap.add_argument("--rss-scaling", action="store_true",
                    help=f"only: peak RSS of b at {RSS_COUNTS[0]} vs {RSS_COUNTS[1]} samples "
                         f"(--quick: {RSS_COUNTS_QUICK[0]} vs {RSS_COUNTS_QUICK[1]})")
    ap.add_argument("--profile", metavar="DIR", default=None,
                    help="cProfile phase b (main and writer threads): stats to stderr, .prof files to DIR")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--phase", choices=tuple(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    if args.phase:
        run_child(args)
        return
    args.rounds = args.rounds or (1 if args.quick or args.size == 1024 else 2)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    if args.dtype != "float32" and args.device == "cpu":
        ap.error(f"--dtype {args.dtype} needs a CUDA device (autocast); CPU runs float32")
    with tempfile.TemporaryDirectory(prefix="synthfer-throughput-") as tmp:
        result = run_rss_scaling(args, Path(tmp)) if args.rss_scaling else run_phases(args, Path(tmp))
    env = {k: v for k, v in sorted(os.environ.items())
           if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_", "GOMP_")) or k == "LD_PRELOAD"}
    report = {"size": args.size, "env": env, "dtype": args.dtype, "batch_size": args.batch_size, "quick": args.quick,
              "rounds": args.rounds,
              "command": " ".join(["python", "bench/throughput.py", *sys.argv[1:]]),
              "python": platform.python_version(), **result}
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print_table(report)


if __name__ == "__main__":
    main()
