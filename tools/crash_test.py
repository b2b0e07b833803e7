"""The full crash harness: SIGKILL at every named point of tests/crash.py (commit, retract, clear,
merge, publish, in fresh / resume / extend / overwrite runs) and at random moments; after each
kill the visible state is checked, then the same command reruns and must give the
uninterrupted build's bytes. Prints one line per kill and a summary.

    python tools/crash_test.py [--random N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import crash  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=8, help="random-moment kills, spread over the scenarios")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    t0 = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="synthfer-crash-") as tmp:
        expected = crash.reference(Path(tmp) / "reference")
        for scenario, target, when, nth in crash.ALL_POINTS:
            outcomes.append(crash.run_point(scenario, target, when, nth, Path(tmp) / "work", expected))
            _show(outcomes[-1])
        rng = random.Random(args.seed)
        scenarios = list(crash.SCENARIOS)
        for i in range(args.random):
            outcomes.append(crash.run_random(scenarios[i % len(scenarios)], Path(tmp) / "work", expected, rng))
            _show(outcomes[-1])
    kills = [o for o in outcomes if o.killed]
    bad = [o for o in outcomes if o.violations or not o.identical]
    print(f"{len(outcomes)} runs, {len(kills)} killed ({len(outcomes) - len(kills)} finished before the kill), "
          f"{sum(bool(o.violations) for o in outcomes)} with a visible inconsistency, "
          f"{sum(o.identical for o in outcomes)}/{len(outcomes)} reruns byte-identical; "
          f"{time.perf_counter() - t0:.0f} s")
    return 1 if bad else 0


def _show(o: crash.Outcome) -> None:
    state = "killed" if o.killed else "not reached"
    print(f"{o.scenario:<10} {o.point:<62} {state:<12} "
          f"{'OK' if not o.violations else 'VIOLATION: ' + '; '.join(o.violations)}  "
          f"rerun {'identical' if o.identical else 'DIFFERENT'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
