"""Counts for the end-of-run table and run.json, computed from the merged manifest."""

from __future__ import annotations

import platform
import time

import pyarrow as pa
import pyarrow.compute as pc
import torch

import synthfer
from synthfer import circumplex, runtime
from synthfer.recipe import FORMAT_VERSION, LoadedRecipe


STATUSES = ("accepted", "rejected", "skipped", "surplus")


def counts(table, recipe) -> dict:
    """by_status, by_split / by_target ({status: n}), by_class ({split: {status: n}}), by_reason,
    by_band of a manifest table. by_class is by target when the recipe has no classes."""
    classes = recipe.targets.classes is not None
    units = table["class" if classes else "target"].to_pylist()
    by_class: dict = {}
    for unit, split, status in zip(units, table["split"].to_pylist(), table["status"].to_pylist()):
        cell = by_class.setdefault(unit or "(none)", {}).setdefault(split, dict.fromkeys(STATUSES, 0))
        cell[status] = cell.get(status, 0) + 1
    return {
        "by_status": _counts(table, "status"),
        "by_split": _acceptance(table, table["split"].to_pylist()),
        "by_target": _acceptance(table, table["target"].to_pylist()),
        "by_class": by_class,
        "by_reason": _counts(pa.Table.from_arrays([pc.list_flatten(table["reject_reasons"])], names=["r"]), "r"),
        "by_band": _band_acceptance(table, recipe),
    }


def _counts(table, column: str) -> dict:
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table[column])
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}


def _acceptance(table, groups: list) -> dict:
    out: dict = {}
    for group, status in zip(groups, table["status"].to_pylist()):
        counts = out.setdefault(group, dict.fromkeys(STATUSES, 0))
        counts[status] = counts.get(status, 0) + 1
    return out


def _band_acceptance(table, recipe) -> dict:
    angles = table["target_angle_deg"].to_pylist()
    out = {}
    for band in recipe.filters.failure_bands:
        inside = [a is not None and circumplex.in_band(a, band.from_deg, band.to_deg) for a in angles]
        counts = _acceptance(table.filter(pa.array(inside, type=pa.bool_())), [0] * sum(inside)) if any(inside) else {}
        out[f"{band.label} {band.action}"] = counts.get(0, dict.fromkeys(STATUSES, 0))
    return out


def correction_counts(table, recipe, pilot_renders: int = 0) -> dict:
    """Renders per accepted image with correction, and without it (each corrected sample judged
    again by the filters on its first render's VA; its other scores are the kept render's), per
    failure band and outside the bands. {} when correction is off."""
    if recipe.correction.mode == "off":
        return {}
    from synthfer.filters import Decider
    from synthfer.io.records import Scores
    from synthfer.plan import targets_of
    from synthfer.stages.assess import va_scores

    targets = {t.key: t for t in targets_of(recipe)}
    decider = Decider(recipe.filters)
    cols = [c for c in table.column_names if c not in ("image_sha256", "recipe_fingerprint")]
    groups: dict = {}
    for row in table.select(cols).to_pylist():
        if not row["attempts"]:
            continue
        t = targets[row["target"]]
        band = decider.band_of(t)
        g = groups.setdefault(f"{band.label} {band.action}" if band else "outside bands",
                              {"samples": 0, "renders": 0, "corrected": 0, "accepted": 0, "accepted_first_render": 0})
        kept = row["status"] in ("accepted", "surplus")
        g["samples"] += 1
        g["renders"] += row["attempts"]
        g["accepted"] += kept
        first = kept
        if row["attempts"] > 1:
            g["corrected"] += 1
            pv, pa = row["attempt_pred_valence"][0], row["attempt_pred_arousal"][0]
            first = pv is not None and pa is not None and decider.after_measurement(
                t, Scores.from_columns(row, row["score_flags"]).with_(**va_scores(t, pv, pa)), True).status == "accepted"
        g["accepted_first_render"] += first
    for g in groups.values():
        g["renders_per_accepted"] = round(g["renders"] / g["accepted"], 3) if g["accepted"] else None
        g["renders_per_accepted_without"] = (round(g["samples"] / g["accepted_first_render"], 3)
                                             if g["accepted_first_render"] else None)
    return {"mode": recipe.correction.mode, "pilot_renders": pilot_renders, "by_band": dict(sorted(groups.items()))}


WARN_BELOW = 0.20   # a class (or target) with less of its planned samples accepted gets a warning


def warnings(result, recipe) -> list[str]:
    """What a person must not miss in a finished build: classes or targets with nothing or little
    accepted (without quotas; with quotas the quota decides), an empty split, a filter that
    rejected every rendered sample."""
    out = []
    unit_word = "class" if recipe.targets.classes is not None else "target"
    if recipe.targets.quota is None:
        none, few = [], []
        for unit, splits in sorted(result.by_class.items()):
            planned = sum(sum(c.values()) for c in splits.values())
            accepted = sum(c.get("accepted", 0) + c.get("surplus", 0) for c in splits.values())
            if accepted == 0:
                none.append(f"{unit} (0 of {planned})")
            elif accepted < WARN_BELOW * planned:
                few.append(f"{unit} ({accepted} of {planned}, {100 * accepted / planned:.0f}%)")
        if none:
            out.append(f"{_plural(len(none), unit_word)} with no accepted sample: {_some(none)}")
        if few:
            out.append(f"{_plural(len(few), unit_word)} with under {100 * WARN_BELOW:.0f}% of their planned "
                       f"samples accepted: {_some(few)}")
        if recipe.targets.classes is not None:   # a class missing from a split: a classifier never sees it there
            missing = [f"{unit} ({split})" for unit, splits in sorted(result.by_class.items())
                       for split, c in sorted(splits.items())
                       if sum(c.values()) and not c.get("accepted", 0) + c.get("surplus", 0)
                       and any(s.get("accepted", 0) + s.get("surplus", 0) for s in splits.values())]
            if missing:
                out.append(f"{_plural(len(missing), 'class')} with no accepted sample in a split: {_some(missing)}")
    for split, fraction in recipe.output.splits.model_dump().items():
        if fraction > 0 and result.by_split.get(split, {}).get("accepted", 0) == 0:
            out.append(f"split {split}: no accepted sample")
    rendered = sum(n for status, n in result.by_status.items() if status != "skipped")
    for reason, n in sorted(result.by_reason.items()):
        if reason != "failure_band" and rendered and n == rendered:
            out.append(f"filter {reason} rejected every rendered sample ({n} of {rendered})")
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'es' if word == 'class' and n != 1 else 's' if n != 1 else ''}"


def _some(items: list[str], shown: int = 8) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def models_info(loaded: LoadedRecipe, models) -> dict:
    """What run.json records about each model (computed while the models are loaded)."""
    recipe_models = loaded.resolved()["models"]
    g, e = models.generator, models.editor
    out = {
        "generator": {"file_sha256": models.files["generator"], "weights_sha256": models.identities["generator"],
                      "file": recipe_models["generator"].get("checkpoint"), "resolution": g.resolution,
                      "n_latent": g.n_latent, "w_dim": g.w_dim, "parameters": _parameters(g)},
        "editor": {"file_sha256": models.files["editor"], "weights_sha256": models.identities["editor"],
                   "file": recipe_models["editor"].get("checkpoint"),
                   "parameters": _parameters(e)},
    }
    if models.quality is not None:
        out["quality"] = {"file_sha256": models.files["quality"], "file": str(models.quality.label)}
    va_slots = [slot.name for slot in loaded.model_slots() if slot.role == "va"]
    for slot, model in zip(va_slots, models.va):
        out[slot] = {"file_sha256": models.files[slot], "file": str(model.label)}
    return out


def _parameters(model) -> int | None:
    """Parameter count of a torch module; None for a model kind that is not one."""
    params = getattr(model, "parameters", None)
    return sum(p.numel() for p in params()) if callable(params) else None


def run_info(loaded: LoadedRecipe, fingerprint: str, model_info: dict, result) -> dict:
    """run.json: the resolved recipe, fingerprints, versions, models, counts and timings."""
    return {
        "format_version": FORMAT_VERSION,
        "synthfer_version": synthfer.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "recipe_file": str(loaded.path.resolve()),
        "overrides": [_redacted(o) for o in loaded.overrides],
        "recipe": loaded.resolved(),
        "fingerprint": fingerprint,
        "shard_fingerprint": result.shard_fingerprint,   # the manifest's recipe_fingerprint column
        "models": model_info,
        "device": _device_name(loaded),
        "runtime": dict(runtime.settings(), batch_size=loaded.recipe.execution.batch_size,
                        batch_size_asked=result.batch_size_asked),
        "counts": {
            "planned_samples": result.planned_samples, "planned_shards": result.planned_shards,
            "committed_shards": result.committed_shards, "built_shards_this_run": result.built_shards,
            "manifest_rows": result.rows, "complete": result.complete,
            "by_status": result.by_status, "by_split": result.by_split, "by_target": result.by_target,
            "by_class": result.by_class, "by_reason": result.by_reason, "by_band": result.by_band,
            "quota_rounds": result.rounds, "warnings": result.warnings, "correction": result.correction,
            "quota_short": {f"{unit}/{split}": n for (unit, split), n in sorted(result.short.items())},
        },
        "timings": {"wall_s": round(result.wall_s, 3), "images_per_s": round(result.images_per_s, 2)},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _device_name(loaded: LoadedRecipe) -> str:
    ex = loaded.recipe.execution
    if ex.executor == "ray":
        return f"ray ({ex.device})"
    if ex.devices:
        return ", ".join(ex.devices)
    from synthfer.models.load import build_device

    return str(build_device(loaded))


def _redacted(override: str) -> str:
    """A --set as run.json records it: output.storage_options may hold credentials (keys,
    secrets, tokens), so its value is never written, as the resolved recipe leaves it out."""
    key, sep, value = override.partition("=")
    path = key.strip()
    secret = path.startswith("output.storage_options") or (path == "output" and "storage_options" in value)
    return f"{key}=<not recorded>" if sep and secret else override
