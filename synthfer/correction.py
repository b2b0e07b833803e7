"""Closed-loop expression correction: re-edit a sample toward the VA its estimator measured.

EmoStyle misses its requested direction by 30-41 degrees between 242 and 329 degrees (the
paper's table). Measuring only lets a build reject those samples; correcting changes the
*request* so that the image lands on the target, while the label stays the original target.

Requests and predictions are handled as complex numbers v + i*a, so "turn by the measured miss
and scale by the measured shrink" is one multiplication:

* iterate: after a render is measured, request' = request * (target / predicted) ** gain (the
  `rotate` update; exact in one step when the editor+estimator pair reads back a rotated,
  shrunk request), or request + gain * (target - predicted) (`additive`, the plain
  fixed-point step), clipped to the unit disc. Up to `steps` more renders; a sample stops as
  soon as it is within the tolerance; the attempt kept is the best one against the original
  target (within tolerance first, then the smallest VA distance), so a useless estimator can
  never make a sample worse than its first render.
* calibrate: a pilot of identities the data never uses renders every target once; per
  direction bin and intensity the least-squares factor b with predicted ~ b * requested gives
  the pre-compensating request target / b. Bins whose pilot already met the tolerance are left
  alone, so directions the editor gets right keep their exact request (and bytes).

See docs/correction.md.
"""

from __future__ import annotations

import cmath
import hashlib
import json
import math
from dataclasses import dataclass, field

import numpy as np

from synthfer import circumplex

CALIBRATION_VERSION = 1
MAX_GAIN = 4.0    # a rotate step never scales the request by more than this (predictions near 0)
NEAR_ZERO = 1e-3  # |predicted| below this has no direction: the rotate update falls back to additive


def clip_disc(z: complex) -> complex:
    """EmoStyle was trained on VA inside the unit disc: a request never leaves it."""
    r = abs(z)
    return z / r if r > 1.0 else z


def applies(target) -> bool:
    """Samples that can be corrected: edited ones with a direction (not neutral, not the origin)."""
    return not target.is_neutral and target.intensity > 0


def direction_error(target, predicted: complex) -> float:
    if abs(predicted) == 0 or not math.isfinite(abs(predicted)):
        return math.inf
    angle = math.degrees(cmath.phase(predicted)) % 360.0
    return circumplex.angular_difference(target.angle_deg, angle)


def distance(target, predicted: complex) -> float:
    d = abs(complex(target.valence, target.arousal) - predicted)
    return d if math.isfinite(d) else math.inf


def within(target, predicted: complex, spec) -> bool:
    """Whether a measured render is close enough that correcting it is not worth a render."""
    if direction_error(target, predicted) > spec.tolerance_deg:
        return False
    return spec.tolerance_distance is None or distance(target, predicted) <= spec.tolerance_distance


def rank(target, predicted: complex, spec) -> tuple:
    """Sort key of an attempt: within tolerance first, then the smallest VA distance."""
    return (not within(target, predicted, spec), distance(target, predicted))


def next_request(target, request: complex, predicted: complex, spec) -> complex:
    t = complex(target.valence, target.arousal)
    if spec.update == "rotate" and abs(predicted) >= NEAR_ZERO:
        ratio = t / predicted
        turn, scale = cmath.phase(ratio), min(abs(ratio), MAX_GAIN)
        new = request * cmath.rect(scale ** spec.gain, turn * spec.gain)
    else:
        new = request + spec.gain * (t - predicted)
    return clip_disc(new)


@dataclass
class Attempts:
    """One corrected sample's renders: each request and what the estimator read back."""
    requests: list[complex]
    predicted: list[complex] = field(default_factory=list)
    best: int = 0

    def errors(self, target) -> list[float | None]:
        return [None if not math.isfinite(d) else d for d in (distance(target, p) for p in self.predicted)]


# ------------------------------------------------------------------------------------------ calibration


def bin_of(angle_deg: float, bin_deg: float) -> int:
    return int((angle_deg % 360.0) // bin_deg)


def _intensity_key(x: float) -> float:
    return round(float(x), 4)


@dataclass
class Calibration:
    """Per (direction bin, intensity): the complex factor b with predicted ~ b * requested."""
    bin_deg: float
    bins: dict                   # (bin, intensity) -> {"factor": complex, "applied": bool, "samples": n, ...}
    pilot: dict                  # identities, renders, fingerprint of what made it

    def request(self, target) -> complex:
        """The pre-compensated request of a target (the target itself where no bin applies)."""
        t = complex(target.valence, target.arousal)
        if not applies(target) or not self.bins:
            return t
        entry = self._nearest(target)
        if not entry["applied"]:
            return t
        return clip_disc(t / entry["factor"])

    def _nearest(self, target) -> dict:
        b, k = bin_of(target.angle_deg, self.bin_deg), _intensity_key(target.intensity)
        if (b, k) in self.bins:
            return self.bins[(b, k)]
        n = max(1, round(360.0 / self.bin_deg))

        def gap(key):
            db = abs(key[0] - b) % n
            return (abs(key[1] - k), min(db, n - db), key)
        return self.bins[min(self.bins, key=gap)]

    def to_json(self) -> bytes:
        bins = []
        for (b, k), e in sorted(self.bins.items()):
            f = e["factor"]
            bins.append({"from_deg": round(b * self.bin_deg, 6), "to_deg": round((b + 1) * self.bin_deg, 6),
                         "intensity": k, "samples": e["samples"], "applied": e["applied"],
                         "mean_direction_error_deg": e["mean_direction_error_deg"],
                         "rotation_deg": round(math.degrees(cmath.phase(f)), 6), "shrink": round(abs(f), 6),
                         "factor": [repr(f.real), repr(f.imag)]})
        doc = {"written_by": "synthfer", "version": CALIBRATION_VERSION, "bin_deg": self.bin_deg,
               "pilot": self.pilot, "bins": bins}
        doc["sha256"] = _content_sha256(doc)
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Calibration":
        try:
            doc = json.loads(data)
            if doc.get("written_by") != "synthfer" or doc.get("version") != CALIBRATION_VERSION:
                raise ValueError("not a synthfer calibration (version 1)")
            if doc.get("sha256") != _content_sha256(doc):   # a flipped byte must not steer future shards
                raise ValueError("its content does not match its sha256 (damaged or edited)")
            bins = {}
            for e in doc["bins"]:
                f = complex(float(e["factor"][0]), float(e["factor"][1]))
                if not (math.isfinite(f.real) and math.isfinite(f.imag)) or f == 0:
                    raise ValueError(f"bin {e['from_deg']}-{e['to_deg']}: factor must be finite and non-zero")
                # from_deg was rounded to 6 places, so floor() would put e.g. bin 3 of 7.3 deg into bin 2
                b = round(float(e["from_deg"]) / float(doc["bin_deg"]))
                bins[(b, _intensity_key(e["intensity"]))] = {
                    "factor": f, "applied": bool(e["applied"]), "samples": int(e["samples"]),
                    "mean_direction_error_deg": e.get("mean_direction_error_deg")}
            return cls(float(doc["bin_deg"]), bins, dict(doc.get("pilot") or {}))
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{where}: not a usable calibration: {err}") from None


def _content_sha256(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def fit(targets: list, predicted: np.ndarray, spec, pilot: dict) -> Calibration:
    """A calibration from a pilot: targets[k] was requested as itself and read back as
    predicted[k] (complex, NaN where the render was unusable)."""
    groups: dict = {}
    for t, p in zip(targets, predicted):
        if applies(t) and np.isfinite(p):
            groups.setdefault((bin_of(t.angle_deg, spec.bin_deg), _intensity_key(t.intensity)), []).append((t, p))
    bins = {}
    for key, pairs in sorted(groups.items()):
        req = np.array([complex(t.valence, t.arousal) for t, _ in pairs])
        pred = np.array([p for _, p in pairs])
        # Least squares for predicted = b * requested: b = sum(p * conj(r)) / sum(|r|^2).
        b = complex(np.sum(pred * np.conj(req)) / np.sum(np.abs(req) ** 2))
        misses = [direction_error(t, complex(p)) for t, p in pairs]
        mean_miss = float(np.mean([m for m in misses if math.isfinite(m)] or [math.inf]))
        usable = b != 0 and math.isfinite(abs(b)) and abs(b) >= NEAR_ZERO
        bins[key] = {"factor": b if usable else complex(1.0, 0.0), "samples": len(pairs),
                     "applied": bool(usable and mean_miss > spec.tolerance_deg),
                     "mean_direction_error_deg": round(mean_miss, 6) if math.isfinite(mean_miss) else None}
    return Calibration(spec.bin_deg, bins, pilot)


def pilot_seed(recipe_seed: int, index: int) -> int:
    """Seeds of the pilot's identities: their own stream, so no pilot face is in the data."""
    digest = hashlib.sha256(f"synthfer-pilot:{recipe_seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
