"""Closed-loop correction: renders per accepted image and wall time with correction off,
iterate, calibrate and both, on the same machine in one run.

Two model sets:
* known-answer: synthfer/models/known_answer.py, an editor whose image carries the request and
  an ONNX estimator that reads it back turned by 35 degrees and shrunk by 0.8 inside 242-329
  degrees (the paper's band), so what correction should achieve is known;
* builtin: the demo's untrained stand-ins. Their VA estimator reads a face as a pseudo-random
  direction, so correction has nothing to learn: this shows its cost, not a gain.

    python bench/correction.py            # prints a table and --json prints the figures
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from synthfer import circumplex  # noqa: E402
from synthfer.build import build  # noqa: E402
from synthfer.models import known_answer  # noqa: E402
from synthfer.recipe import load_recipe  # noqa: E402

MODES = {"off": None, "iterate": {"mode": "iterate", "steps": 3},
         "calibrate": {"mode": "calibrate", "pilot_identities": 4},
         "both": {"mode": "both", "steps": 3, "pilot_identities": 4}}
BAND = (242.0, 329.0)


def known_answer_recipe(work: Path, identities: int) -> dict:
    (work / "va.onnx").write_bytes(known_answer.estimator_bytes())
    return {"name": "known-answer", "seed": 3, "identities": {"count": identities},
            "targets": {"emotions": "all", "intensities": [0.4, 0.7], "neutral": True},
            "models": {"generator": {"kind": "canvas"}, "editor": {"kind": "canvas"},
                       "va": known_answer.va_block("va.onnx")},
            "filters": {"max_direction_error_deg": 10,
                        "failure_bands": [{"from_deg": 242, "to_deg": 329, "action": "verify"}]},
            "output": {"dir": "out", "samples_per_shard": 285, "image": {"format": "png", "size": 16}},
            "execution": {"device": "cpu", "batch_size": 16}}


def builtin_recipe(work: Path, identities: int) -> dict:
    recipe = yaml.safe_load((REPO / "recipes" / "demo.yaml").read_text())
    recipe["identities"]["count"] = identities
    recipe["output"]["dir"] = "out"
    return recipe


def measure(recipe: dict, work: Path, mode: str) -> dict:
    run = work / mode
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    if (work / "va.onnx").exists():
        shutil.copy(work / "va.onnx", run / "va.onnx")
    r = dict(recipe)
    if MODES[mode] is not None:
        r["correction"] = MODES[mode]
    (run / "recipe.yaml").write_text(yaml.safe_dump(r))
    t0 = time.perf_counter()
    result = build(load_recipe(run / "recipe.yaml"))
    wall = time.perf_counter() - t0
    rows = pq.read_table(run / "out" / "manifest.parquet").to_pylist()
    info = json.loads((run / "out" / "run.json").read_text())
    pilot = (info["counts"].get("correction") or {}).get("pilot_renders", 0)
    renders = sum(r["attempts"] for r in rows) + pilot
    accepted = sum(r["status"] == "accepted" for r in rows)
    band = [r for r in rows if r["target_angle_deg"] is not None and circumplex.in_band(r["target_angle_deg"], *BAND)
            and r["direction_error_deg"] is not None]
    return {"mode": mode, "wall_s": round(wall, 2), "renders": renders, "pilot_renders": pilot, "accepted": accepted,
            "renders_per_accepted": round(renders / accepted, 3) if accepted else None,
            "band_acceptance": round(sum(r["status"] == "accepted" for r in band) / len(band), 3) if band else None,
            "band_direction_error_deg": round(sum(r["direction_error_deg"] for r in band) / len(band), 2) if band else None,
            "complete": result.complete}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=20, help="identities per build (default 20)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()
    known_answer.register()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (("known-answer", known_answer_recipe), ("builtin", builtin_recipe)):
            work = Path(tmp) / name
            work.mkdir()
            recipe = make(work, args.identities)
            measure(recipe, work, "off")   # warm-up: imports, onnxruntime sessions, caches
            out[name] = [measure(recipe, work, mode) for mode in MODES]
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, runs in out.items():
        print(f"\n{name} ({args.identities} identities)")
        print(f"{'mode':10} {'wall s':>7} {'renders':>8} {'accepted':>9} {'renders/acc':>12} {'band acc':>9} "
              f"{'band dir err':>13}")
        for r in runs:
            print(f"{r['mode']:10} {r['wall_s']:7.2f} {r['renders']:8d} {r['accepted']:9d} "
                  f"{r['renders_per_accepted'] or float('nan'):12.3f} "
                  f"{(r['band_acceptance'] or 0) * 100:8.1f}% {r['band_direction_error_deg'] or float('nan'):13.2f}")
        base = runs[0]["wall_s"]
        print("wall time vs off: " + ", ".join(f"{r['mode']} x{r['wall_s'] / base:.2f}" for r in runs[1:]))


if __name__ == "__main__":
    main()
