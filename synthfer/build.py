"""Orchestration: plan, models, lock, fingerprint check, resume, executor, finalize.

Everything a user can get wrong (recipe, models, --shards) is checked before the output folder
is touched. Then, under the output's lock: compare fingerprints (resume / overwrite / extend),
drop damaged shards, build the pending ones with retries, merge the manifest from committed
shards only, write run.json.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from synthfer import summary
from synthfer.errors import InterruptedBuild, OutputError, ShardsFailedError, UsageError
from synthfer.executors import run_shards
from synthfer.io import atomic
from synthfer.io.lock import OutputLock
from synthfer.io.manifest import merge_parts, read_manifest
from synthfer.io.shards import ShardStore
from synthfer.models.load import load_models
from synthfer.plan import Plan, Shard
from synthfer.progress import Quiet
from synthfer.recipe import LoadedRecipe, diff_inputs
from synthfer.worker import Worker

Mode = Literal["resume", "overwrite", "extend"]


class Reporter(Protocol):
    """How a build tells its caller what is happening (progress bar, log lines, JSON, nothing)."""

    def started(self, shards: int, samples: int, already_done: int) -> None: ...
    def note(self, message: str) -> None: ...
    def committed(self, shard: Shard, marker: dict) -> None: ...
    def retried(self, shard: Shard, attempt: int, error: str) -> None: ...
    def failed(self, shard: Shard, error: str) -> None: ...
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
    failed: dict = field(default_factory=dict)      # shard -> last error, after retries
    shard_fingerprint: str = ""                     # in markers and the manifest's rows
    by_status: dict = field(default_factory=dict)
    by_split: dict = field(default_factory=dict)
    by_target: dict = field(default_factory=dict)   # target -> {status: n}
    by_reason: dict = field(default_factory=dict)   # reject/skip reason -> n (a row may have several)
    by_band: dict = field(default_factory=dict)     # "242-329 verify" -> {status: n}


def build(loaded: LoadedRecipe, shards: str | None = None, reporter: Reporter | None = None,
          mode: Mode = "resume", trust_markers: bool = False) -> BuildResult:
    """Build (or finish building) the recipe's dataset. Raises ShardsFailedError (exit 3) after
    finalizing when some shards failed every retry."""
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
    models = load_models(loaded)  # before anything is written: a bad model file leaves no trace
    hashes, device_type = models.identities, models.device.type
    inputs, fingerprint = loaded.fingerprint_inputs(hashes, device_type), loaded.fingerprint(hashes, device_type)
    worker = Worker(recipe, plan, models, loaded.shard_fingerprint(hashes, device_type))

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{out}: cannot create the output folder: {err.strerror or err}") from None
    store = ShardStore(out)
    with OutputLock(out), _signals_abandon_shard():
        _reconcile(store, out, inputs, fingerprint, mode, reporter)
        try:
            store.prepare()
            atomic.write_json(out / "fingerprint.json", {"fingerprint": fingerprint, "inputs": inputs,
                                                         "shard_fingerprint": worker.fingerprint})
        except OSError as err:
            raise OutputError(f"{out}: cannot write: {err.strerror or err}") from None
        committed = _valid_committed(store, plan, worker.fingerprint, trust_markers, reporter)
        pending = [s for s in selected if s.name not in committed]
        reporter.started(len(selected), sum(len(s.identities) for s in selected) * len(plan.targets),
                         len(selected) - len(pending))
        t_compute = time.perf_counter()
        try:
            failed = run_shards(loaded, worker, pending, store, reporter)
        except OSError as err:
            raise OutputError(f"{out}: write failed: {err.strerror or err}; committed shards are intact") from None
        finally:
            reporter.finished()
        built_s = time.perf_counter() - t_compute
        try:
            result = _finalize(loaded, plan, store, fingerprint, worker.fingerprint, models, pending, failed,
                               t0, built_s)
        except OSError as err:
            raise OutputError(f"{out}: writing the manifest or run.json failed: {err.strerror or err}; "
                              f"committed shards are intact, run again to finish") from None
    if failed:
        raise ShardsFailedError(f"{len(failed)} of {len(pending)} shards failed after "
                                f"{recipe.execution.retries} retries: " +
                                "; ".join(f"{name}: {err}" for name, err in sorted(failed.items())), result)
    return result


def _reconcile(store: ShardStore, out: Path, inputs: dict, fingerprint: str, mode: Mode, reporter) -> None:
    """Decide what the existing output may be reused for; refuse with the differences listed."""
    state_path = out / "fingerprint.json"
    try:
        state = json.loads(state_path.read_text()) if state_path.exists() else None
    except (OSError, ValueError):
        state = "damaged"
    if state is not None and not (isinstance(state, dict) and isinstance(state.get("inputs"), dict)):
        if mode != "overwrite":
            raise UsageError(f"{state_path}: damaged or not synthfer's; use --mode overwrite to start this output again")
        state = "damaged"
    if mode == "overwrite":
        if state_path.is_dir():
            raise UsageError(f"{state_path}: is a folder; remove it by hand")
        if state is not None or store.marker_names():
            reporter.note(f"--mode overwrite: removing the previous build in {out}")
            store.clear()
        return
    if state is None:
        if store.marker_names():  # shards without a fingerprint record: not ours to mix with
            raise UsageError(f"{out}: holds shards with no fingerprint.json; use --mode overwrite or another --output")
        return
    if state.get("fingerprint") == fingerprint:
        return
    changes = diff_inputs(state.get("inputs", {}), inputs)
    count_only = bool(changes) and all(c.startswith("recipe.identities.count:") for c in changes)
    if mode == "extend" and count_only:
        old = state["inputs"]["recipe"]["identities"]["count"]
        new = inputs["recipe"]["identities"]["count"]
        if new < old:
            raise UsageError(f"{out}: --mode extend only grows identities.count ({old} -> {new}); "
                             f"use --mode overwrite to shrink")
        reporter.note(f"--mode extend: identities.count {old} -> {new}; existing shards are kept")
        return
    hint = "--mode extend" if count_only else "--mode overwrite"
    raise UsageError(f"{out}: was built from a different recipe or weights ({'; '.join(changes)}); "
                     f"use {hint} or another --output")


def _valid_committed(store: ShardStore, plan: Plan, shard_fingerprint: str, trust_markers: bool,
                     reporter) -> dict[str, dict]:
    """Committed shards that match their marker and the plan; the rest are retracted to be rebuilt."""
    planned_rows = {s.name: len(s.identities) * len(plan.targets) for s in plan.shards}
    valid = {}
    for name in store.marker_names():
        try:
            marker = json.loads(store.marker_path(name).read_text())
            problem = store.problem(name, marker, hashes=not trust_markers)
        except (OSError, ValueError) as err:
            marker, problem = {}, f"unreadable marker ({err})"
        if problem is None and marker.get("fingerprint") != shard_fingerprint:
            problem = "built with another recipe fingerprint"
        if problem is None and name in planned_rows and marker.get("rows") != planned_rows[name]:
            problem = f"holds {marker.get('rows')} rows, the plan now has {planned_rows[name]}"
        if problem is None:
            valid[name] = marker
        else:
            reporter.note(f"{name}: {problem}: rebuilding it")
            store.retract(name)
    return valid


def _finalize(loaded, plan, store, fingerprint, worker_fingerprint, models, pending, failed, t0, built_s) -> BuildResult:
    committed = store.committed()
    parts = [store.part_path(s.name) for s in plan.shards if s.name in committed]
    manifest = store.root / "manifest.parquet"
    rows = merge_parts(parts, manifest)
    table = read_manifest(manifest)
    built = [s for s in pending if s.name not in failed]
    built_images = sum(len(s.identities) for s in built) * len(plan.targets)
    result = BuildResult(
        out_dir=store.root, planned_samples=plan.total_samples, planned_shards=len(plan.shards),
        built_shards=len(built), committed_shards=len(committed), rows=rows,
        wall_s=time.perf_counter() - t0, images_per_s=built_images / built_s if built_s > 0 else 0.0,
        complete=len(committed) == len(plan.shards), failed=dict(failed), shard_fingerprint=worker_fingerprint,
        **summary.counts(table, loaded.recipe),
    )
    summary.write_run_json(loaded, fingerprint, models, result)
    return result


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: output.dir exists and is not a folder")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()) and not any(
            (out / n).exists() for n in ("run.json", "parts", "shards", "fingerprint.json")):
        raise UsageError(f"{out}: output.dir is a non-empty folder that is not a synthfer output; "
                         f"choose an empty or new folder")


@contextmanager
def _signals_abandon_shard():
    """SIGTERM/SIGINT raise InterruptedBuild in the main thread: the shard being computed is
    abandoned (its temporaries are cleaned by the next run), a commit already under way on the
    writer thread completes, and the build exits 143/130."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        name = signal.Signals(signum).name
        raise InterruptedBuild(f"{name}: build interrupted; committed shards are intact, run again to finish",
                               128 + signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
