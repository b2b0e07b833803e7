"""What `validate` and `plan` tell a user beyond errors: settings that cannot be meant, and what
an existing output measured (observed score ranges, acceptance per class for quota estimates).
Warnings, never errors: the recipe is valid, it may just not do what its author expects."""

from __future__ import annotations

import json

from synthfer import quota
from synthfer.io.layout import layout_of
from synthfer.io.manifest import read_manifest
from synthfer.io.shards import is_output
from synthfer.plan import Plan
from synthfer.recipe import LoadedRecipe


def measured(loaded: LoadedRecipe, columns: list[str]):
    """The existing output's manifest (these columns), or None when there is no built output."""
    try:
        folder = loaded.output_folder()
        layout = layout_of(folder)
        if not folder.exists(layout.manifest) or not is_output(folder, layout):
            return None
        return read_manifest(folder, layout.manifest, columns=columns, fill_missing=True)
    except (OSError, ValueError):
        return None


def _built_iterating(loaded: LoadedRecipe) -> bool:
    """Whether the existing output was built with correction iterating (its run.json says so):
    only then do its attempts measure what iterating costs."""
    try:
        folder = loaded.output_folder()
        info = json.loads(folder.read_bytes(layout_of(folder).run_json))
        return info["recipe"]["correction"]["mode"] in ("iterate", "both")
    except (OSError, ValueError, KeyError, TypeError):
        return False


def recipe_warnings(loaded: LoadedRecipe) -> list[str]:
    f = loaded.recipe.filters
    out = []
    limits = [("filters.max_direction_error_deg", f.max_direction_error_deg)] + [
        (f"filters.failure_bands[{i}].max_direction_error_deg", b.max_direction_error_deg)
        for i, b in enumerate(f.failure_bands)]
    for field, value in limits:
        if value is not None and value < 1:
            out.append(f"{field}: {value:g} degrees rejects almost every sample (VA estimators are off by tens of "
                       f"degrees); degrees, not radians or fractions, are meant")
    for i, band in enumerate(f.failure_bands):
        span = 360.0 if band.to_deg - band.from_deg >= 360 else (band.to_deg - band.from_deg) % 360
        if span > 180:
            out.append(f"filters.failure_bands[{i}]: covers {span:g} degrees, counter-clockwise from {band.from_deg:g} "
                       f"to {band.to_deg:g}; from {band.to_deg:g} to {band.from_deg:g} would cover {360 - span:g} "
                       f"(are the ends swapped?)")
    table = measured(loaded, ["quality", "identity_similarity"])
    for field, column, value in (("filters.min_quality", "quality", f.min_quality),
                                 ("filters.min_identity_similarity", "identity_similarity", f.min_identity_similarity)):
        if value is None or table is None:
            continue
        seen = [x for x in table.column(column).to_pylist() if x is not None]
        if not seen:
            continue
        lo, hi = min(seen), max(seen)
        if value > hi:
            out.append(f"{field}: {value:g} is above every {column} the output measured ({lo:.4g} to {hi:.4g}): "
                       f"it rejects every sample")
        elif value <= lo:
            out.append(f"{field}: {value:g} is at or below every {column} the output measured ({lo:.4g} to "
                       f"{hi:.4g}): it rejects none")
    out += _split_shares(loaded.recipe)
    return out


def _split_shares(recipe) -> list[str]:
    """Splits come whole shards at a time: few big shards can give shares far from output.splits
    (a quota build's top-up rounds fill each split by itself, so only builds without one)."""
    if recipe.targets.quota is not None:
        return []
    plan = Plan(recipe)
    wanted = recipe.output.splits.model_dump()
    got = plan.identities_by_split()
    total = sum(got.values())
    if all(abs(got[s] / total - f) <= 0.1 for s, f in wanted.items()):
        return []
    share = lambda d: "/".join(f"{100 * v:.0f}" for v in d.values())   # noqa: E731
    return [f"output.splits: {len(plan.shards)} shards of up to {plan.identities_per_shard} identities give train, "
            f"val, test {share({s: n / total for s, n in got.items()})}% of the identities, not "
            f"{share(wanted)}%; use a smaller output.samples_per_shard or more identities"]


def quota_estimate(loaded: LoadedRecipe, plan: Plan) -> str | None:
    """Identities a build needs for every quota at the acceptance an existing output measured."""
    wanted = quota.quotas(plan)
    table = measured(loaded, ["target", "split", "status"])
    if not wanted or table is None or table.num_rows == 0:
        return None
    tally = quota.tally(plan, zip(*(table.column(c).to_pylist() for c in ("target", "split", "status"))))
    need = quota.estimate_identities(plan, wanted, tally)
    cap = loaded.recipe.identities.cap
    rates = sorted(((tally.accepted_by_unit[u] / tally.rendered[u], u) for u in tally.rendered if tally.rendered[u]))
    worst = ", ".join(f"{u} {100 * r:.0f}%" for r, u in rates[:3])
    text = (f"at the acceptance measured in {loaded.output_location} (lowest: {worst}), every quota needs about "
            f"{need} identities (identities.count {loaded.recipe.identities.count}, max_count {cap})")
    return text + ("; raise identities.max_count" if need > cap else "")


def correction_estimate(loaded: LoadedRecipe, plan: Plan) -> str | None:
    """The renders correction adds: the pilot's exactly, the loop's at most (and at the rate an
    existing output measured, when there is one)."""
    from synthfer import correction

    spec = loaded.recipe.correction
    if spec.mode == "off":
        return None
    correctable = [t for t in plan.targets if correction.applies(t)]
    parts = []
    if spec.calibrates:
        parts.append("calibration: reused from " + spec.calibration if spec.calibration else
                     f"calibration pilot: {spec.pilot_identities} identities x {len(correctable)} targets = "
                     f"{spec.pilot_identities * len(correctable)} renders")
    if spec.iterates:
        keys = {t.key for t in correctable}
        samples = sum(len(s.identities) * sum(t.key in keys for t in plan.shard_targets(s)) for s in plan.shards)
        text = f"iterate: at most {spec.steps} more renders for each of {samples} edited samples (up to {spec.steps * samples} more)"
        table = measured(loaded, ["target", "attempts"]) if _built_iterating(loaded) else None
        if table is not None and table.num_rows:
            attempts = [a for k, a in zip(table.column("target").to_pylist(), table.column("attempts").to_pylist())
                        if a and k in keys]
            if attempts:
                extra = sum(a - 1 for a in attempts) / len(attempts)
                text += (f"; at the rate measured in {loaded.output_location}, about {extra:.2f} more per edited "
                         f"sample (~{round(extra * samples)} more)")
        parts.append(text)
    return "correction: " + "; ".join(parts)
