"""Orchestration: plan, check the output folder, load models, run the executor, finalize."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import torch

import synthfer
from synthfer import circumplex
from synthfer.errors import OutputError, UsageError
from synthfer.executors import local
from synthfer.io import atomic
from synthfer.io.manifest import merge_parts, read_manifest
from synthfer.io.shards import ShardStore
from synthfer.models.load import load_models, model_identities
from synthfer.plan import Plan, Shard
from synthfer.progress import Quiet
from synthfer.recipe import FORMAT_VERSION, LoadedRecipe
from synthfer.worker import Worker


class Reporter(Protocol):
    """How a build tells its caller what is happening (progress bar, log lines, nothing)."""

    def started(self, shards: int, samples: int, already_done: int) -> None: ...
    def committed(self, shard: Shard, marker: dict) -> None: ...
    def finished(self) -> None: ...


@dataclass
class BuildResult:
    out_dir: Path
    planned_samples: int
    planned_shards: int
    built_shards: int                  # committed by this run
    committed_shards: int              # on disk now, this run's and earlier ones
    rows: int
    wall_s: float
    images_per_s: float
    complete: bool
    by_status: dict = field(default_factory=dict)
    by_split: dict = field(default_factory=dict)
    by_target: dict = field(default_factory=dict)   # target -> {status: n}
    by_reason: dict = field(default_factory=dict)   # reject/skip reason -> n (a row may have several)
    by_band: dict = field(default_factory=dict)     # "242-329 verify" -> {status: n}


def build(loaded: LoadedRecipe, shards: str | None = None, reporter: Reporter | None = None) -> BuildResult:
    reporter = reporter or Quiet()
    t0 = time.perf_counter()
    recipe = loaded.recipe
    plan = Plan(recipe)
    try:
        selected = plan.select(shards)
    except ValueError as err:
        raise UsageError(f"--shards: {err}") from None

    out = loaded.output_dir
    _check_output_dir(out)
    fingerprint = loaded.fingerprint(model_identities(loaded))
    store = ShardStore(out)
    committed = store.committed()
    foreign = sorted(n for n, m in committed.items() if m.get("fingerprint") != fingerprint)
    if foreign:
        raise UsageError(f"{out}: holds shards of a different recipe or weights ({foreign[0]} has fingerprint "
                         f"{committed[foreign[0]].get('fingerprint')}, this recipe {fingerprint}); "
                         f"build into another --output or remove that folder")
    models = load_models(loaded)  # before anything is written: a bad model file leaves no trace
    worker = Worker(recipe, plan, models, fingerprint)

    pending = [s for s in selected if s.name not in committed]
    try:
        store.prepare()
    except OSError as err:
        raise OutputError(f"{out}: cannot create output folders: {err.strerror or err}") from None
    reporter.started(len(selected), sum(len(s.identities) for s in selected) * len(plan.targets),
                     len(selected) - len(pending))
    t_compute = time.perf_counter()
    try:
        local.run(worker, pending, store, reporter.committed)
    except OSError as err:
        raise OutputError(f"{out}: write failed: {err.strerror or err}") from None
    finally:
        reporter.finished()
    built_s = time.perf_counter() - t_compute

    committed = store.committed()
    parts = [store.part_path(s.name) for s in plan.shards if s.name in committed]
    manifest = out / "manifest.parquet"
    rows = merge_parts(parts, manifest)
    table = read_manifest(manifest)
    built_images = sum(len(s.identities) for s in pending) * len(plan.targets)
    result = BuildResult(
        out_dir=out, planned_samples=plan.total_samples, planned_shards=len(plan.shards),
        built_shards=len(pending), committed_shards=len(committed), rows=rows,
        wall_s=time.perf_counter() - t0, images_per_s=built_images / built_s if built_s > 0 else 0.0,
        complete=len(committed) == len(plan.shards),
        by_status=_counts(table, "status"), by_split=_counts(table, "split"),
        by_target=_acceptance(table, table["target"].to_pylist()),
        by_reason=_counts(pa.Table.from_arrays([pc.list_flatten(table["reject_reasons"])], names=["r"]), "r"),
        by_band=_band_acceptance(table, recipe),
    )
    _write_run_json(loaded, plan, fingerprint, models, result)
    return result


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: output.dir exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not any((out / n).exists() for n in ("run.json", "parts", "shards")):
        raise UsageError(f"{out}: output.dir is a non-empty folder that is not a synthfer output; "
                         f"choose an empty or new folder")


def _counts(table, column: str) -> dict:
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table[column])
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def _acceptance(table, groups: list) -> dict:
    out: dict = {}
    for group, status in zip(groups, table["status"].to_pylist()):
        counts = out.setdefault(group, {"accepted": 0, "rejected": 0, "skipped": 0})
        counts[status] += 1
    return out


def _band_acceptance(table, recipe) -> dict:
    angles = table["target_angle_deg"].to_pylist()
    out = {}
    for band in recipe.filters.failure_bands:
        inside = [a is not None and circumplex.in_band(a, band.from_deg, band.to_deg) for a in angles]
        counts = _acceptance(table.filter(pa.array(inside, type=pa.bool_())), [0] * sum(inside)) if any(inside) else {}
        out[f"{band.label} {band.action}"] = counts.get(0, {"accepted": 0, "rejected": 0, "skipped": 0})
    return out


def _write_run_json(loaded: LoadedRecipe, plan: Plan, fingerprint: str, models, result: BuildResult) -> None:
    info = {
        "format_version": FORMAT_VERSION,
        "synthfer_version": synthfer.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "recipe_file": str(loaded.path.resolve()),
        "overrides": loaded.overrides,
        "recipe": loaded.resolved(),
        "fingerprint": fingerprint,
        "models": {
            "generator": {"sha256_or_id": models.identities["generator"], "resolution": models.generator.resolution,
                          "n_latent": models.generator.n_latent, "w_dim": models.generator.w_dim,
                          "parameters": sum(p.numel() for p in models.generator.parameters())},
            "editor": {"sha256_or_id": models.identities["editor"],
                       "parameters": sum(p.numel() for p in models.editor.parameters())},
            **{role: {"sha256": models.identities[role], "file": str(m.label)}
               for role, m in (("quality", models.quality), ("va", models.va)) if m is not None},
        },
        "device": str(models.device),
        "counts": {
            "planned_samples": result.planned_samples, "planned_shards": result.planned_shards,
            "committed_shards": result.committed_shards, "built_shards_this_run": result.built_shards,
            "manifest_rows": result.rows, "complete": result.complete,
            "by_status": result.by_status, "by_split": result.by_split, "by_target": result.by_target,
            "by_reason": result.by_reason, "by_band": result.by_band,
        },
        "timings": {"wall_s": round(result.wall_s, 3), "images_per_s": round(result.images_per_s, 2)},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic.write_json(loaded.output_dir / "run.json", info)
