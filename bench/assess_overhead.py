"""What assessment (quality + VA through onnxruntime, decide) adds to a build's wall time.

Builds the same recipe twice per round into temporary folders, once as written and once with
models.quality, models.va and filters removed, alternating so both see the same machine state,
and prints the best time of each and their ratio. Target for the demo: overhead under 25%.

    python bench/assess_overhead.py [RECIPE] [--rounds 3] [--set FIELD=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from synthfer.build import build
from synthfer.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def timed_build(recipe: Path, overrides: list[str], out: Path) -> float:
    loaded = load_recipe(recipe, overrides, str(out))
    t0 = time.perf_counter()
    result = build(loaded)
    elapsed = time.perf_counter() - t0
    assert result.complete
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default=str(REPO / "recipes" / "demo.yaml"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args()
    bare = args.overrides + ["models.quality=null", "models.va=null", "filters={}"]
    times = {"without": [], "with": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, overrides in (("without", bare), ("with", args.overrides)):
                times[name].append(timed_build(Path(args.recipe), overrides, Path(tmp) / f"{name}-{r}"))
    best = {k: min(v) for k, v in times.items()}
    overhead = best["with"] / best["without"] - 1.0
    if args.json:
        print(json.dumps({"recipe": args.recipe, "overrides": args.overrides, "times_s": times,
                          "best_s": best, "overhead": overhead}))
        return
    print(f"recipe {args.recipe} {' '.join(args.overrides)}")
    print(f"{'build':<22}{'best s':>8}   all rounds")
    for name in ("without", "with"):
        print(f"{name + ' assessment':<22}{best[name]:>8.2f}   " + " ".join(f"{t:.2f}" for t in times[name]))
    print(f"assessment overhead: {100 * overhead:+.1f}% (target < 25%)")


if __name__ == "__main__":
    main()
