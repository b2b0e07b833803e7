"""Orchestration: plan, models and fingerprint, lock, reconcile with what is there, executor, finalize.

Everything a user can get wrong (recipe, models, --shards) is checked before the output folder
is touched. Then, under the output's lock: compare fingerprints (resume / overwrite / extend),
remove dead builds' leftovers, hand the pending shards to the executor core, merge the manifest
from committed shards only, write run.json.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol

import pyarrow.compute as pc

from synthfer import batching, runtime, signals, summary
from synthfer.errors import ModelFileError, OutputError, QuotaNotMetError, ShardsFailedError, UsageError, first_line
from synthfer.calibrate import calibrate
from synthfer.calibrate import given as given_calibration
from synthfer.executors import core, distributed, make_backend
from synthfer.io.layout import CURRENT, V1, layout_of
from synthfer.io.lock import output_lock, probe
from synthfer.io.manifest import merge_parts
from synthfer.io.shards import ShardStore, is_output
from synthfer.card import card
from synthfer.models.load import build_device, licence_notes, load_models
from synthfer.plan import Plan, Shard
from synthfer.progress import Quiet
from synthfer.quota import short_text
from synthfer.recipe import LoadedRecipe, diff_inputs
from synthfer.recipe.load import DECISION_KEYS
from synthfer.rounds import Committed, run_rounds
from synthfer.worker import Worker

Mode = Literal["resume", "overwrite", "extend"]


class Reporter(Protocol):
    """How a build tells its caller what is happening (progress bar, log lines, JSON, nothing)."""

    def started(self, shards: int, samples: int, already_done: int) -> None: ...
    def more(self, shards: int, samples: int) -> None: ...            # a quota round adds to the totals
    def note(self, message: str) -> None: ...
    def rendered(self, shard: Shard, samples: int) -> None: ...       # a batch was generated (local builds)
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
    fingerprint: str = ""                           # the whole build's (fingerprint.json, run.json)
    by_status: dict = field(default_factory=dict)
    by_split: dict = field(default_factory=dict)
    by_target: dict = field(default_factory=dict)   # target -> {status: n}
    by_reason: dict = field(default_factory=dict)   # reject/skip reason -> n (a row may have several)
    by_band: dict = field(default_factory=dict)     # "242-329 verify" -> {status: n}
    by_class: dict = field(default_factory=dict)    # class (or target) -> split -> {status: n}
    rounds: int = 0                                 # quota top-up rounds
    short: dict = field(default_factory=dict)       # (class, split) -> accepted still missing
    partial: bool = False                           # --shards: only some base shards were asked for
    identities: int = 0                             # identities planned, top-ups included
    warnings: list = field(default_factory=list)    # summary.warnings (complete builds only)
    unit: str = "target"                            # what by_class groups by: class, or target without classes
    correction: dict = field(default_factory=dict)  # summary.correction_counts: renders per accepted image
    batch_size_asked: object = None                 # execution.batch_size as the recipe has it ("auto" or N)


def build(loaded: LoadedRecipe, shards: str | None = None, reporter: Reporter | None = None,
          mode: Mode = "resume", trust_markers: bool = False) -> BuildResult:
    """Build (or finish building) the recipe's dataset. Raises ShardsFailedError (exit 3) after
    finalizing when some shards failed every retry."""
    reporter = reporter or Quiet()
    signals.explain("; committed shards are intact, run again to finish")
    t0 = time.perf_counter()
    recipe = loaded.recipe
    plan = Plan(recipe)
    try:
        selected = plan.select(shards)
    except ValueError as err:
        raise UsageError(f"--shards: {err}") from None
    folder = loaded.output_folder()
    if folder.is_local:
        _check_local_path(folder)
        _refuse_linked_folders(folder)   # before anything reads or locks through one
    layout = layout_of(folder)
    _check_output(folder, layout)
    if layout is not CURRENT and mode != "overwrite":
        raise UsageError(f"{folder.location}: a format-{layout.version} output (synthfer 0.1); this synthfer writes "
                         f"format {CURRENT.version}: rebuild it with --mode overwrite, or build into a new folder")
    with _storage(folder, "cannot read"):
        probe(folder, layout)   # a running build: exit 75 before the models load
    # Models before anything is written: a bad model file leaves no trace. Builds whose shards are
    # built elsewhere read the weights on the CPU only to fingerprint them.
    device_type = _device_type(loaded)
    runtime.tune_malloc()
    reporter.note("loading models (" + ", ".join(slot.name for slot in loaded.model_slots()) + ") ...")
    models = load_models(loaded, "cpu" if distributed(recipe) else None)
    asked = recipe.execution.batch_size
    loaded = loaded.with_batch_size(batching.resolve(asked, models.generator, _batch_device(loaded, device_type)))
    recipe = loaded.recipe
    if asked == "auto":
        reporter.note(f"batch size {recipe.execution.batch_size} (auto: {device_type}, "
                      f"{models.generator.resolution} px generator)")
    hashes, model_info = models.identities, summary.models_info(loaded, models)
    inputs, fingerprint = loaded.fingerprint_inputs(hashes, device_type), loaded.fingerprint(hashes, device_type)
    shard_fingerprint = loaded.shard_fingerprint(hashes, device_type)
    store = ShardStore(folder, CURRENT)
    worker = None if distributed(recipe) else Worker(recipe, plan, models, shard_fingerprint, store)
    if worker is not None:   # per-batch progress; shards built elsewhere report at each commit
        worker.on_batch = reporter.rendered
    lanes = runtime.lanes(device_type, local=worker is not None)
    if lanes > 1:
        each = runtime.lane_threads(lanes)
        reporter.note(f"{lanes} shards at a time, {each} torch thread{'s' if each > 1 else ''} each")
    # Distributed builds calibrate on the driver's CPU copy of the models (deterministic either way).
    pilot = (worker or Worker(recipe, plan, models, shard_fingerprint, store)) if recipe.correction.calibrates else None
    reused_calibration = given_calibration(loaded, hashes)   # a bad file is refused before anything is written
    del models

    with _storage(folder, "cannot create the output folder"):
        folder.ensure()
    with output_lock(folder, layout, recipe.output.lock) as lock, signals.handled():
        with _storage(folder, "cannot write"):
            if layout is not CURRENT:   # --mode overwrite of an older format: its files go first
                reporter.note(f"--mode overwrite: removing the format-{layout.version} build in {folder.location}")
                _clear(ShardStore(folder, layout))
                folder.remove_temporaries(layout.data_dirs)
                layout = CURRENT
            _reconcile(store, inputs, fingerprint, shard_fingerprint, mode, reporter)
            folder.remove_temporaries(layout.data_dirs)
            for rel in store.garbage():
                folder.remove(rel)
            folder.write(layout.fingerprint, _json({"written_by": "synthfer", "format_version": layout.version,
                                                    "fingerprint": fingerprint, "inputs": inputs,
                                                    "shard_fingerprint": shard_fingerprint,
                                                    "lock": lock.method}))
            if pilot is not None:
                calibrate(loaded, plan, pilot, store, shard_fingerprint, hashes, reporter, reused_calibration)
                del pilot
            committed = Committed(store, shard_fingerprint, trust_markers, reporter)
        t_compute = time.perf_counter()

        def run(jobs):
            return core.run(make_backend(loaded, store, worker, shard_fingerprint, jobs, lanes), jobs, reporter,
                            recipe.execution.retries)
        try:
            with _storage(folder, "write failed", "; committed shards are intact"):
                outcome = run_rounds(plan, committed, selected, run, shards is not None, reporter)
        finally:
            reporter.finished()
        built_s = time.perf_counter() - t_compute
        with _storage(folder, "writing the manifest or run.json failed",
                      "; committed shards are intact, run again to finish"):
            result = _finalize(loaded, plan, store, fingerprint, shard_fingerprint, model_info, outcome, t0, built_s,
                               asked)
    if outcome.failed:
        raise ShardsFailedError(f"{len(outcome.failed)} of {len(plan.shards)} shards failed after "
                                f"{recipe.execution.retries} retries: " +
                                "; ".join(f"{name}: {err}" for name, err in sorted(outcome.failed.items())), result)
    if outcome.short:
        raise QuotaNotMetError(f"quota not met within identities.max_count ({recipe.identities.cap}): "
                               + short_text(outcome.short) + "; raise identities.max_count or loosen the filters",
                               result)
    return result


def _batch_device(loaded: LoadedRecipe, device_type: str):
    """The device whose memory sizes an automatic batch: the build's own, or the workers' kind."""
    import torch

    if loaded.recipe.execution.executor == "ray" or loaded.recipe.execution.devices:
        return torch.device(device_type)
    return build_device(loaded)


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
    """OSError from the output folder -> one line naming the folder (or the file, when it says)."""
    try:
        yield
    except OSError as err:
        inside = isinstance(err.filename, str) and err.filename.startswith(folder.location + "/")
        where = err.filename if inside and err.strerror else folder.location
        raise OutputError(f"{where}: {doing}: {err.strerror or first_line(err)}{after}") from None


def _refuse_linked_folders(folder) -> None:
    """Before anything is read, locked, removed or written: a folder synthfer keeps in a local
    output may not be a symbolic link (a linked data/ would have another output's shards cleared
    or overwritten)."""
    for rel in dict.fromkeys(d for d in (*CURRENT.data_dirs, *V1.data_dirs) if d):
        path = folder.root / rel
        if path.is_symlink():
            raise UsageError(f"{path}: is a symbolic link; synthfer never follows links in an output: make it a "
                             f"folder, or build elsewhere")


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


def _reconcile(store: ShardStore, inputs: dict, fingerprint: str, shard_fingerprint: str, mode: Mode,
               reporter) -> None:
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
    decided = [c for c in changes if c.startswith(DECISION_KEYS)]
    if changes and len(decided) == len(changes):
        if state.get("shard_fingerprint") not in (None, shard_fingerprint):   # skip bands decide what is rendered
            reporter.note(f"the filters changed which samples are rendered ({'; '.join(decided)}): committed shards "
                          f"are rebuilt")
        else:
            reporter.note(f"only what decides samples changed ({'; '.join(decided)}): committed shards are "
                          f"re-decided from their stored scores; images are rendered only where one is newly needed")
        return
    changes = [c for c in changes if c not in decided]
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
    if not changes:  # same inputs, other fingerprint: the record itself was changed
        raise UsageError(f"{folder.display(layout.fingerprint)}: its fingerprint {state.get('fingerprint')!r} does not "
                         f"match its own inputs ({fingerprint}): the file was edited; use --mode overwrite or "
                         f"another --output")
    raise UsageError(f"{folder.location}: was built from a different recipe or weights ({'; '.join(changes)}); "
                     f"use {hint} or another --output")


def _clear(store: ShardStore) -> None:
    """Remove the previous build: the manifest first (it must never list a shard that is gone),
    then each shard (marker first), unmarked shard files, the build's records and its report.
    Only files synthfer writes, by name; anything else a user put there stays."""
    folder, layout = store.folder, store.layout
    folder.remove(layout.manifest)
    for index in store.marker_indices():
        store.retract(index)
    for rel in store.garbage():
        folder.remove(rel)
    for rel in (layout.run_json, layout.fingerprint, layout.classes, layout.calibration):
        folder.remove(rel)
    if _is_our_card(folder, layout):
        folder.remove(layout.card)
    for entry in folder.list(layout.report_dir):  # a report of the old build would describe data that is gone
        if not entry.is_dir and layout.is_report_file(entry.name):
            folder.remove(f"{layout.report_dir}/{entry.name}")
    for rel in (layout.report_dir, *layout.shard_dirs, "_synthfer"):
        folder.remove_empty_dir(rel)


def _is_our_card(folder, layout) -> bool:
    """The output's README.md is removed with the build only when synthfer wrote it."""
    try:
        return b"\nsynthfer:\n" in folder.read_bytes(layout.card)[:20000]
    except OSError:
        return False


def _finalize(loaded, plan, store, fingerprint, shard_fingerprint, model_info, outcome, t0, built_s,
              asked) -> BuildResult:
    # Only shards of this build's fingerprint: one written by a build that lost the lock is not ours.
    committed = {i: m for i, m in store.committed().items() if m.get("fingerprint") == shard_fingerprint}
    parts = [(store.layout.part(s.index), committed[s.index]["files"][store.layout.part(s.index)]["sha256"])
             for s in plan.shards if s.index in committed]
    table = merge_parts(store.folder, parts, store.layout.manifest)
    recipe = loaded.recipe
    if recipe.targets.classes is not None:
        from synthfer.classes import classes_record

        store.folder.write(store.layout.classes, _json(classes_record(recipe.targets.class_list(),
                                                                      recipe.targets.intensities)))
    result = BuildResult(
        out_dir=store.folder.location, planned_samples=plan.total_samples, planned_shards=len(plan.shards),
        built_shards=outcome.built, committed_shards=len(parts), rows=table.num_rows,
        wall_s=time.perf_counter() - t0, images_per_s=outcome.rendered / built_s if built_s > 0 else 0.0,
        complete=len(parts) == len(plan.shards) and not outcome.short, failed=dict(outcome.failed),
        shard_fingerprint=shard_fingerprint, fingerprint=fingerprint, rounds=outcome.rounds, short=dict(outcome.short),
        partial=outcome.partial, identities=plan.next_identity,
        unit="class" if loaded.recipe.targets.classes is not None else "target", **summary.counts(table, loaded.recipe),
    )
    result.batch_size_asked = asked
    if len(parts) == len(plan.shards):
        result.warnings = summary.warnings(result, loaded.recipe)
    result.correction = summary.correction_counts(table, recipe, _pilot_renders(store))
    # Splits the card lists: those with an accepted image (`datasets` refuses a split with no rows).
    present = sorted(set(table.filter(pc.equal(table["status"], "accepted"))["split"].to_pylist()))
    content_id = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]   # the parts' sha256s cover every row
    store.folder.write(store.layout.card, card(loaded, result, model_info, licence_notes(loaded), store.layout, present,
                                               content_id))
    store.folder.write(store.layout.run_json, _json(summary.run_info(loaded, fingerprint, model_info, result)))
    return result


def _pilot_renders(store) -> int:
    rel = store.layout.calibration
    if not store.folder.exists(rel):
        return 0
    try:
        return int(json.loads(store.folder.read_bytes(rel)).get("pilot", {}).get("renders") or 0)
    except (ValueError, TypeError, AttributeError):
        return 0


def _check_output(folder, layout) -> None:
    """The output is new, empty, or synthfer's own (by its signature, not by file names);
    anything else is refused in every mode, so no build ever writes into or clears a user's folder."""
    names = [e.name for e in folder.list("") if not (e.name == layout.lock or layout.lease_generation(e.name) is not None
                                                       or layout.is_temporary(e.name))]
    if names and not is_output(folder, layout):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise UsageError(f"{folder.location}: output.dir is a non-empty folder that is not a synthfer output (it "
                         f"holds {shown}); choose an empty or new folder")


def _check_local_path(folder) -> None:
    """A path that can never be a folder (it, or a folder above it, is a file) is a usage error."""
    path = folder.root
    while True:
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                what = "output.dir" if path == folder.root else f"{path} (above output.dir)"
                raise UsageError(f"{folder.location}: {what} exists and is not a folder")
            return
        if path.parent == path:
            return
        path = path.parent
