"""Orchestration: plan, models and fingerprint, lock, reconcile with what is there, executor, finalize.

Everything a user can get wrong (recipe, models, --shards) is checked before the output folder
is touched. Then, under the output's lock: compare fingerprints (resume / overwrite / extend),
remove dead builds' leftovers, hand the pending shards to the executor core, merge the manifest
from committed shards only, write run.json.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

from synthfer import summary
from synthfer.errors import InterruptedBuild, ModelFileError, OutputError, ShardsFailedError, UsageError
from synthfer.executors import core, distributed, make_backend
from synthfer.io.layout import CURRENT
from synthfer.io.lock import output_lock
from synthfer.io.manifest import merge_parts
from synthfer.io.shards import ShardStore
from synthfer.models.load import build_device, load_models
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
    out_dir: str                       # the output folder (local path or URL)
    planned_samples: int
    planned_shards: int
    built_shards: int                  # committed by this run
    committed_shards: int              # in the output now, this run's and earlier ones
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
    folder = loaded.output_folder()
    layout = CURRENT
    _check_output(folder, layout)
    # Models before anything is written: a bad model file leaves no trace. Builds whose shards are
    # built elsewhere read the weights on the CPU only to fingerprint them.
    device_type = _device_type(loaded)
    models = load_models(loaded, "cpu" if distributed(recipe) else None)
    hashes, model_info = models.identities, summary.models_info(loaded, models)
    inputs, fingerprint = loaded.fingerprint_inputs(hashes, device_type), loaded.fingerprint(hashes, device_type)
    shard_fingerprint = loaded.shard_fingerprint(hashes, device_type)
    store = ShardStore(folder, layout)
    worker = None if distributed(recipe) else Worker(recipe, plan, models, shard_fingerprint, store)
    del models

    with _storage(folder, "cannot create the output folder"):
        folder.ensure()
    with output_lock(folder, layout, recipe.output.lock) as lock, _signals_abandon_shard():
        with _storage(folder, "cannot write"):
            _reconcile(store, inputs, fingerprint, mode, reporter)
            folder.remove_temporaries(layout.data_dirs)
            for rel in store.garbage():
                folder.remove(rel)
            folder.write(layout.fingerprint, _json({"fingerprint": fingerprint, "inputs": inputs,
                                                    "shard_fingerprint": shard_fingerprint,
                                                    "lock": lock.method}))
            committed = core.valid_committed(store, plan, shard_fingerprint, trust_markers, reporter,
                                             before_retract=lambda: folder.remove(layout.manifest))
        pending = [s for s in selected if s.index not in committed]
        reporter.started(len(selected), sum(len(s.identities) for s in selected) * len(plan.targets),
                         len(selected) - len(pending))
        t_compute = time.perf_counter()
        try:
            with _storage(folder, "write failed", "; committed shards are intact"):
                failed = core.run(make_backend(loaded, store, worker, shard_fingerprint, pending), pending,
                                  reporter, recipe.execution.retries)
        finally:
            reporter.finished()
        built_s = time.perf_counter() - t_compute
        with _storage(folder, "writing the manifest or run.json failed",
                      "; committed shards are intact, run again to finish"):
            result = _finalize(loaded, plan, store, fingerprint, shard_fingerprint, model_info, pending, failed,
                               t0, built_s)
    if failed:
        raise ShardsFailedError(f"{len(failed)} of {len(pending)} shards failed after "
                                f"{recipe.execution.retries} retries: " +
                                "; ".join(f"{name}: {err}" for name, err in sorted(failed.items())), result)
    return result


def _device_type(loaded: LoadedRecipe) -> str:
    """The kind of device the shards are built on (part of the fingerprint); checked against dtype."""
    ex = loaded.recipe.execution
    if ex.executor == "ray" and ex.device.startswith("cuda"):
        kind = "cuda"   # the actors' GPUs; the driver need not have one
    else:
        kind = build_device(loaded).type
    if ex.dtype != "float32" and kind != "cuda":
        raise ModelFileError(f"execution.dtype: {ex.dtype} runs under CUDA autocast only; this build runs on "
                             f"{kind} (use float32)")
    return kind


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


@contextmanager
def _storage(folder, doing: str, after: str = ""):
    """OSError from the output folder -> one line naming the folder."""
    try:
        yield
    except OSError as err:
        raise OutputError(f"{folder.location}: {doing}: {err.strerror or err}{after}") from None


def _read_state(store: ShardStore):
    """fingerprint.json's content, None when there is none, "damaged" when unreadable."""
    rel = store.layout.fingerprint
    if not store.folder.exists(rel):
        return None
    if store.folder.is_dir(rel):
        raise UsageError(f"{store.folder.display(rel)}: is a folder; remove it by hand")
    try:
        state = json.loads(store.folder.read_bytes(rel))
    except (OSError, ValueError):
        return "damaged"
    return state if isinstance(state, dict) and isinstance(state.get("inputs"), dict) else "damaged"


def _reconcile(store: ShardStore, inputs: dict, fingerprint: str, mode: Mode, reporter) -> None:
    """Decide what the existing output may be reused for; refuse with the differences listed."""
    folder, layout = store.folder, store.layout
    state = _read_state(store)
    if state == "damaged" and mode != "overwrite":
        raise UsageError(f"{folder.display(layout.fingerprint)}: damaged or not synthfer's; use --mode overwrite "
                         f"to start this output again")
    if mode == "overwrite":
        if state is not None or store.marker_indices():
            reporter.note(f"--mode overwrite: removing the previous build in {folder.location}")
            _clear(store)
        return
    if state is None:
        if store.marker_indices():  # shards without a fingerprint record: not ours to mix with
            raise UsageError(f"{folder.location}: holds shards with no fingerprint.json; use --mode overwrite "
                             f"or another --output")
        return
    if state.get("fingerprint") == fingerprint:
        return
    changes = diff_inputs(state.get("inputs", {}), inputs)
    count_only = bool(changes) and all(c.startswith("recipe.identities.count:") for c in changes)
    if mode == "extend" and count_only:
        old = state["inputs"]["recipe"]["identities"]["count"]
        new = inputs["recipe"]["identities"]["count"]
        if new < old:
            raise UsageError(f"{folder.location}: --mode extend only grows identities.count ({old} -> {new}); "
                             f"use --mode overwrite to shrink")
        reporter.note(f"--mode extend: identities.count {old} -> {new}; existing shards are kept")
        return
    hint = "--mode extend" if count_only else "--mode overwrite"
    raise UsageError(f"{folder.location}: was built from a different recipe or weights ({'; '.join(changes)}); "
                     f"use {hint} or another --output")


def _clear(store: ShardStore) -> None:
    """Remove the previous build: the manifest first (it must never list a shard that is gone),
    then each shard (marker first), unmarked shard files, and the build's own records."""
    folder, layout = store.folder, store.layout
    folder.remove(layout.manifest)
    for index in store.marker_indices():
        store.retract(index)
    for rel in store.garbage():
        folder.remove(rel)
    for rel in (layout.run_json, layout.fingerprint):
        folder.remove(rel)
    folder.remove_tree(layout.report_dir)  # a report of the old build would describe data that is gone


def _finalize(loaded, plan, store, fingerprint, shard_fingerprint, model_info, pending, failed, t0,
              built_s) -> BuildResult:
    committed = store.committed()
    parts = [store.layout.part(s.index) for s in plan.shards if s.index in committed]
    table = merge_parts(store.folder, parts, store.layout.manifest)
    built = [s for s in pending if s.name not in failed]
    built_images = sum(len(s.identities) for s in built) * len(plan.targets)
    result = BuildResult(
        out_dir=store.folder.location, planned_samples=plan.total_samples, planned_shards=len(plan.shards),
        built_shards=len(built), committed_shards=len(committed), rows=table.num_rows,
        wall_s=time.perf_counter() - t0, images_per_s=built_images / built_s if built_s > 0 else 0.0,
        complete=len(committed) == len(plan.shards), failed=dict(failed), shard_fingerprint=shard_fingerprint,
        **summary.counts(table, loaded.recipe),
    )
    store.folder.write(store.layout.run_json, _json(summary.run_info(loaded, fingerprint, model_info, result)))
    return result


def _check_output(folder, layout) -> None:
    if folder.is_local and folder.exists("") and not folder.is_dir(""):
        raise UsageError(f"{folder.location}: output.dir exists and is not a folder")
    names = {e.name for e in folder.list("")} - {layout.lock}
    names = {n for n in names if layout.lease_generation(n) is None}
    if names and not names & {layout.run_json, layout.fingerprint, *layout.shard_dirs}:
        raise UsageError(f"{folder.location}: output.dir is a non-empty folder that is not a synthfer output; "
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
