"""correction.mode calibrate/both: make (or reuse) the output's calibration.json before any shard.

The pilot renders every correctable target once for `correction.pilot_identities` identities of
their own seed stream (never in the data) and fits a per-bin pre-compensation
(correction.fit). The file records the weights it was made with and the shard fingerprint it
belongs to, so a rerun reuses it and another recipe can reuse it only with the same models.
"""

from __future__ import annotations

from synthfer import correction
from synthfer.errors import UsageError

# The weights a calibration depends on: what renders and what reads the expression back.
_ROLES = ("generator", "editor", "va")


def _weights(hashes: dict) -> dict:
    return {k: v for k, v in sorted(hashes.items()) if k.split(".")[0] in _ROLES}


def given(loaded, hashes: dict) -> bytes | None:
    """The bytes of the recipe's correction.calibration, checked (UsageError) before a build
    writes anything; None when the recipe names none."""
    spec = loaded.recipe.correction
    if not spec.calibrates or spec.calibration is None:
        return None
    path = loaded.resolve(spec.calibration)
    data = path.read_bytes()
    try:
        cal = correction.Calibration.from_json(data, f"correction.calibration: {path}")
    except ValueError as err:
        raise UsageError(str(err)) from None
    made_with, weights = cal.pilot.get("weights") or {}, _weights(hashes)
    if made_with != weights:
        differ = sorted(k for k in set(made_with) | set(weights) if made_with.get(k) != weights.get(k))
        raise UsageError(f"correction.calibration: {path} was made with other weights ({', '.join(differ)} "
                         f"differ); use it with the same models, or leave it out to run a pilot")
    return data


def calibrate(loaded, plan, worker, store, shard_fingerprint: str, hashes: dict, reporter,
              reused: bytes | None = None) -> None:
    """Write the output's calibration.json: `reused` (given()'s bytes), the one already there
    for this shard fingerprint, or a new pilot's."""
    spec = loaded.recipe.correction
    folder, rel = store.folder, store.layout.calibration
    if reused is not None:
        if not (folder.exists(rel) and folder.read_bytes(rel) == reused):
            folder.write(rel, reused)
        reporter.note(f"correction: using the calibration in {loaded.resolve(spec.calibration)}")
        return
    if folder.exists(rel):
        try:
            cal = correction.Calibration.from_json(folder.read_bytes(rel), folder.display(rel))
            if cal.pilot.get("fingerprint") == shard_fingerprint:
                reporter.note(f"correction: reusing {folder.display(rel)} (same pilot)")
                return
        except (ValueError, OSError) as err:
            reporter.note(f"correction: {str(err).splitlines()[0]}: calibrating again")
    targets = [t for t in plan.targets if correction.applies(t)]
    n = spec.pilot_identities
    reporter.note(f"correction: calibrating with a pilot of {n} identities x {len(targets)} targets "
                  f"({n * len(targets)} renders)")
    predicted = worker.pilot(targets)
    cal = correction.fit(targets * n, predicted, spec, {
        "identities": n, "renders": n * len(targets), "fingerprint": shard_fingerprint, "weights": _weights(hashes),
        "seed": loaded.recipe.seed})
    folder.write(rel, cal.to_json())
