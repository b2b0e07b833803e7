"""How long `synthfer report` takes on a large manifest (target: 100,000 rows in under 10 s).

Writes a synthetic build output (manifest.parquet through synthfer.io.manifest, so it has the
real schema, plus a run.json with a failure band) of about 100,000 rows: the 28 directions at
three intensities, neutral and two raw points per identity, noisy predictions, a mix of
accepted, rejected (with reasons) and skipped rows. Then times write_report without contact
sheets (they read images, which a synthetic output has none of) and, with --compare, the same
with a comparison against a second synthetic output. Prints the best of --rounds.

    python bench/report_speed.py [--rows 100000] [--rounds 3] [--compare]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from synthfer import circumplex, metrics
from synthfer.io.manifest import SCHEMA, rows_to_table
from synthfer.report import write_report

TARGET_S = 10.0
BAND = {"from_deg": 242.0, "to_deg": 329.0, "action": "verify", "max_direction_error_deg": 45.0}


def _targets() -> list[tuple[str, float | None, float]]:
    out = [("neutral", None, 0.0)]
    for e in circumplex.emotions():
        out += [(f"{e.name}-{round(s * 100):03d}", e.angle_deg, s) for s in (0.33, 0.66, 1.0)]
    out += [("va-p030-m030", 315.0, float(np.hypot(0.3, 0.3))), ("va-m050-p020", None, 0.0)]
    return out


def synthetic_output(folder: Path, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    targets = _targets()
    n_ids = -(-rows // len(targets))
    ident = np.repeat(np.arange(n_ids), len(targets))[:rows]
    t_idx = np.tile(np.arange(len(targets)), n_ids)[:rows]
    names = np.array([t[0] for t in targets], dtype=object)[t_idx]
    angle = np.array([np.nan if t[1] is None else t[1] for t in targets])[t_idx]
    s = np.array([t[2] for t in targets])[t_idx]
    # the second raw point: given as VA rather than angle
    point2 = names == "va-m050-p020"
    tv = np.where(point2, -0.5, np.nan_to_num(s * np.cos(np.radians(angle))))
    ta = np.where(point2, 0.2, np.nan_to_num(s * np.sin(np.radians(angle))))
    angle = np.where(point2, metrics.angle_deg(-0.5, 0.2), angle)
    s = np.where(point2, np.hypot(-0.5, 0.2), s)
    pv = np.clip(0.7 * tv + rng.normal(0, 0.25, rows), -1, 1)
    pa = np.clip(0.7 * ta + rng.normal(0, 0.25, rows), -1, 1)
    err = metrics.va_errors(tv, ta, pv, pa)
    in_band = np.array([a == a and circumplex.in_band(a, BAND["from_deg"], BAND["to_deg"]) for a in angle])
    quality = rng.normal(25, 4, rows)
    status = np.where(quality < 20, "rejected", "accepted").astype(object)
    direction_bad = np.nan_to_num(err["direction_error_deg"]) > np.where(in_band, 45, 180)
    status[direction_bad] = "rejected"
    skipped = in_band & (rng.random(rows) < 0.05)
    status[skipped] = "skipped"
    rows_out = []
    for i in range(rows):
        reasons = (["failure_band"] if skipped[i] else
                   (["low_quality"] if quality[i] < 20 else []) + (["va_direction"] if direction_bad[i] else []))
        measured = not skipped[i]
        row = dict.fromkeys(SCHEMA.names)   # every column; unmeasured scores stay null
        row.update(key=f"{ident[i]:07d}_{names[i]}", shard=int(ident[i] // 10), identity=int(ident[i]),
                   identity_seed=int(ident[i]), split="train", target=names[i],
                   target_angle_deg=None if angle[i] != angle[i] else float(angle[i]),
                   target_intensity=float(s[i]), target_valence=float(tv[i]), target_arousal=float(ta[i]),
                   status=status[i], reject_reasons=reasons, recipe_fingerprint="bench")
        if measured:
            row.update(quality=float(quality[i]), identity_similarity=0.8, pred_valence=float(pv[i]),
                       pred_arousal=float(pa[i]), width=256, height=256,
                       **{k: (None if v[i] != v[i] else float(v[i])) for k, v in err.items()})
        rows_out.append(row)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_to_table(rows_out), folder / "manifest.parquet")
    (folder / "run.json").write_text(json.dumps({"recipe": {"name": f"bench-{seed}",
                                                             "filters": {"failure_bands": [BAND]}}}))
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", action="store_true", help="also time a report with --compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        a = synthetic_output(Path(tmp) / "a", args.rows, seed=1)
        b = synthetic_output(Path(tmp) / "b", args.rows, seed=2) if args.compare else None
        print(f"synthetic manifest{'s' if b else ''} of {args.rows:,} rows written in {time.perf_counter() - t0:.1f} s")
        cases = [("report", None)] + ([("report --compare", b)] if b else [])
        worst = 0.0
        for label, other in cases:
            times = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                write_report(a, compare=other, sheets=False)
                times.append(time.perf_counter() - t0)
            best = min(times)
            worst = max(worst, best)
            print(f"{label} of {args.rows:,} rows (no sheets): best {best:.2f} s of {args.rounds} "
                  f"(all: {', '.join(f'{t:.2f}' for t in times)}); target < {TARGET_S:.0f} s")
    return 0 if worst < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
