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


def calibrate(loaded, plan, worker, store, shard_fingerprint: str, hashes: dict, reporter) -> correction.Calibration:
    spec = loaded.recipe.correction
    folder, rel = store.folder, store.layout.calibration
    weights = {k: v for k, v in sorted(hashes.items()) if k.split(".")[0] in _ROLES}
    if spec.calibration is not None:
        path = loaded.resolve(spec.calibration)
        data = path.read_bytes()
        try:
            cal = correction.Calibration.from_json(data, f"correction.calibration: {path}")
        except ValueError as err:
            raise UsageError(str(err)) from None
        made_with = cal.pilot.get("weights")
        if made_with != weights:
            differ = sorted(k for k in set(made_with or {}) | set(weights) if (made_with or {}).get(k) != weights.get(k))
            raise UsageError(f"correction.calibration: {path} was made with other weights ({', '.join(differ)} "
                             f"differ); use it with the same models, or leave it out to run a pilot")
        if not (folder.exists(rel) and folder.read_bytes(rel) == data):
            folder.write(rel, data)
        reporter.note(f"correction: using the calibration in {path}")
        return cal
    if folder.exists(rel):
        try:
            cal = correction.Calibration.from_json(folder.read_bytes(rel), folder.display(rel))
            if cal.pilot.get("fingerprint") == shard_fingerprint:
                reporter.note(f"correction: reusing {folder.display(rel)} (same pilot)")
                return cal
        except (ValueError, OSError):
            pass   # made again below
    targets = [t for t in plan.targets if correction.applies(t)]
    n = spec.pilot_identities
    reporter.note(f"correction: calibrating with a pilot of {n} identities x {len(targets)} targets "
                  f"({n * len(targets)} renders)")
    predicted = worker.pilot(targets)
    cal = correction.fit(targets * n, predicted, spec, {
        "identities": n, "renders": n * len(targets), "fingerprint": shard_fingerprint, "weights": weights,
        "seed": loaded.recipe.seed})
    folder.write(rel, cal.to_json())
    return cal
