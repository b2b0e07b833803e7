"""What a balanced training set costs: images rendered per accepted image, with quota top-up
rounds vs one round big enough for every class, on the same recipe (recipes/affectnet8.yaml by
default), plus what a refilter costs next to a full build.

  with top-up:    the recipe as it is: 60 identities, then rounds of new identities rendering
                  only the classes still short, until every class x split holds its quota.
  without top-up: the same recipe without a quota, identities.count raised (by 10% steps from
                  the estimate the top-up build's acceptance gives) until every class x split
                  has at least its quota of accepted images; all of them rendered.
  refilter:       the top-up output re-decided with a tighter and a looser min_quality, timed
                  against a fresh build with the same filters.

    python bench/quota_cost.py [--recipe recipes/affectnet8.yaml] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(recipe: Path, out: Path, *sets: str) -> tuple[float, int]:
    """(seconds, images rendered this run) of one `synthfer build`, in this process."""
    from synthfer.build import build as run_build
    from synthfer.errors import QuotaNotMetError
    from synthfer.recipe import load_recipe

    loaded = load_recipe(recipe, list(sets), str(out))
    t0 = time.perf_counter()
    try:
        result = run_build(loaded)
    except QuotaNotMetError as err:
        result = err.result
    return time.perf_counter() - t0, round(result.images_per_s * result.wall_s) if result.images_per_s else 0


def rendered(out: Path) -> int:
    rows = pq.read_table(out / "manifest.parquet", columns=["status"]).column("status").to_pylist()
    return sum(s != "skipped" for s in rows)


def per_class_split(out: Path) -> Counter:
    t = pq.read_table(out / "manifest.parquet", columns=["class", "split", "status"]).to_pylist()
    return Counter((r["class"], r["split"]) for r in t if r["status"] in ("accepted", "surplus"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "affectnet8.yaml"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from synthfer.plan import Plan
    from synthfer.quota import quotas
    from synthfer.recipe import load_recipe

    recipe = Path(args.recipe)
    loaded = load_recipe(recipe)
    wanted = quotas(Plan(loaded.recipe))
    total = sum(wanted.values())
    report: dict = {"recipe": str(recipe), "quota_images": total}
    with tempfile.TemporaryDirectory(prefix="synthfer-quota-") as tmp:
        tmp = Path(tmp)
        seconds, _ = build(recipe, tmp / "topup")
        info = json.loads((tmp / "topup" / "run.json").read_text())
        report["with_top_up"] = {"seconds": round(seconds, 1), "rendered": rendered(tmp / "topup"),
                                 "identities": _identities(tmp / "topup"), "rounds": info["counts"]["quota_rounds"]}
        # without top-up: from the acceptance measured above, raise the count until every quota is met
        have = per_class_split(tmp / "topup")
        ids = report["with_top_up"]["identities"]
        count = max(math.ceil(ids * max(wanted[k] / max(have[k], 1) for k in wanted)), loaded.recipe.identities.count)
        while True:
            out = tmp / f"single-{count}"
            seconds, _ = build(recipe, out, "targets.quota=null", f"identities.count={count}",
                               f"identities.max_count={count}")
            got = per_class_split(out)
            if all(got[k] >= n for k, n in wanted.items()):
                break
            count = math.ceil(count * 1.1)
        report["without_top_up"] = {"seconds": round(seconds, 1), "rendered": rendered(out), "identities": count}
        for side in ("with_top_up", "without_top_up"):
            report[side]["rendered_per_accepted"] = round(report[side]["rendered"] / total, 2)
        # refilter vs fresh build
        report["refilter"] = {}
        for value in (25, 15):
            t_refilter, _ = build(recipe, tmp / "topup", f"filters.min_quality={value}")
            t_fresh, _ = build(recipe, tmp / f"fresh-{value}", f"filters.min_quality={value}")
            report["refilter"][f"min_quality {value}"] = {"refilter_s": round(t_refilter, 1),
                                                         "fresh_build_s": round(t_fresh, 1)}
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    w, s = report["with_top_up"], report["without_top_up"]
    print(f"{recipe.name}: {total} accepted images wanted ({len({k[0] for k in wanted})} classes x splits)")
    print(f"with top-up:    {w['identities']} identities in {w['rounds'] + 1} rounds, {w['rendered']} images "
          f"rendered, {w['rendered_per_accepted']} per accepted image, {w['seconds']} s")
    print(f"without top-up: {s['identities']} identities in one round, {s['rendered']} images rendered, "
          f"{s['rendered_per_accepted']} per accepted image, {s['seconds']} s")
    print(f"top-up renders {s['rendered'] / w['rendered']:.2f}x fewer images for the same balanced set")
    for name, r in report["refilter"].items():
        print(f"refilter to {name}: {r['refilter_s']} s; a fresh build with it: {r['fresh_build_s']} s")
    return 0


def _identities(out: Path) -> int:
    ids = pq.read_table(out / "manifest.parquet", columns=["identity"]).column("identity").to_pylist()
    return len(set(ids))


if __name__ == "__main__":
    sys.exit(main())
