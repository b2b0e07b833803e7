"""The children of bench/throughput.py: one phase each (prep, a, b, c), one JSON line on stdout.

Run by the parent as `python bench/throughput_phases.py --phase P --count N --workdir DIR ...`,
each in its own process so its peak RSS is its own. See bench/throughput.py for what a, b and
c measure. The constants here are shared with the parent, which imports this module without
importing torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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
# size. With the default rounds on a 2-core CPU: about 3.5 min (64), 5.5 min (256), 4 min (1024).
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

# Targets on a 2-core CPU, per size (1024 px: not set for a CPU; the 256 px ones are shown).
TARGETS = {64: {"b/a": 0.75, "b/c": 3.0}, 256: {"b/a": 0.9, "b/c": 1.5}, 1024: {"b/a": 0.9, "b/c": 1.5}}
TARGET_RSS_RATIO = 1.10

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
                   "image": {"format": "png", "size": args.size},
                   "splits": {"train": 1.0, "val": 0.0, "test": 0.0}},   # throughput only: any shard count
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
    from synthfer import batching, runtime

    runtime.tune_malloc()   # the build's own process settings: b/a measures the pipeline, not glibc
    n, bs = args.count, batching.resolve(args.batch_size, generator, device)
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
            "resolution": generator.resolution, "batch_size": bs,
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
    lanes = json.loads((folder / "out" / "run.json").read_text())["runtime"]["lanes"]
    shutil.rmtree(folder)
    skipped = result.by_status.get("skipped", 0)
    accepted = result.by_status.get("accepted", 0)
    seconds = clock.t_finished - clock.t_started
    return {"images": result.planned_samples - skipped, "seconds": seconds,
            "device_s_per_1000_accepted": round(1000 * seconds / accepted, 2) if accepted else None,
            "build_call_s": t_call, "load_s": clock.t_started - t0, "finalize_s": t0 + t_call - clock.t_finished,
            "identities": identities, "shards": result.planned_shards, "accepted": result.by_status.get("accepted", 0),
            "device": str(device), "device_name": _device_name(device), "lanes": lanes}


def _profiled_build(build, loaded, clock, prof_dir: Path):
    """cProfile of the main thread (model work) and of the writer thread (assess, encode, commit)."""
    import cProfile
    import pstats

    from synthfer import worker as worker_module

    writer = cProfile.Profile()
    finish = worker_module.Worker.finish

    def profiled_finish(self, computed):
        writer.enable()
        try:
            return finish(self, computed)
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

    assessor = Assessor(onnx("quality", q), q, [(onnx("va", va), va)])
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




def _batch(text: str):
    """--batch-size: auto (the build's default) or a number."""
    return text if text == "auto" else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description="one phase of bench/throughput.py")
    ap.add_argument("--phase", choices=tuple(PHASES), required=True)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--size", type=int, choices=(64, 256, 1024), default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=_batch, default="auto")
    ap.add_argument("--samples-per-shard", type=int, default=None)
    ap.add_argument("--profile", default=None)
    args = ap.parse_args()
    if args.phase in ("a", "b"):
        from synthfer import runtime

        # Before torch is imported, as `synthfer build` does (runtime.py: lanes). Not for c: the
        # original toolkit runs with glibc's defaults.
        runtime.tune_malloc()
    run_child(args)


if __name__ == "__main__":
    main()
