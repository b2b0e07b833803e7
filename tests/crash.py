"""Crash harness: kill a build with SIGKILL at a named point (tests/killpoints.py) in each kind of
run (fresh, resume of a damaged output, extend, overwrite), check what the kill left, then run
the same command again and compare the result with an uninterrupted build, byte for byte.

After every kill:
* every shard a marker makes visible hash-checks against its marker;
* the manifest, if there is one, lists only committed shards, each with exactly its part's rows;
after the rerun: the dataset files equal the reference build's and no temporary is left.

Used by tests/test_crash.py (a fast subset in CI) and tools/crash_test.py (the full set).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

REPO = Path(__file__).resolve().parents[1]
HANG_GUARD_S = 900   # against a hung child only; no result depends on how long anything takes

# 8 identities x 5 targets, 2 identities per shard (4 shards), 32 px PNG.
RECIPE = """\
name: crash
seed: 7
identities: {count: 8}
targets: {emotions: [happy, sad], intensities: [0.5, 1.0], neutral: true}
output: {dir: out, samples_per_shard: 10, image: {format: png, size: 32}}
execution: {device: cpu, batch_size: 4}
"""

# The same build with closed-loop correction (a calibration pilot, then up to 2 re-edits a sample).
CORRECTED = RECIPE + "models: {va: {kind: builtin}}\ncorrection: {mode: both, steps: 2, pilot_identities: 2}\n"

# scenario -> (commands that prepare the output, the command that is killed and then rerun)
SCENARIOS = {
    "fresh": ([], []),
    "resume": ([[]], []),                                     # prepared whole, then a shard damaged
    "extend": ([["--set", "identities.count=5"]], ["--mode", "extend"]),   # a partial last shard
    "overwrite": ([["--set", "seed=8"]], ["--mode", "overwrite"]),
}

# (scenario, function, before|after, nth call): each names a step of commit, retract, clear,
# merge or publish. The CI subset; tools/crash_test.py runs ALL_POINTS.
POINTS = [
    ("fresh", "synthfer.io.local_folder:LocalFolder._write_temp", "after", 3),   # a tar written, not renamed
    ("fresh", "synthfer.io.local_folder:LocalFolder.write_all", "after", 4),     # files in place, marker not
    ("fresh", "synthfer.build:merge_parts", "before", 1),                       # all committed, no manifest
    ("resume", "synthfer.io.shards:ShardStore.retract", "before", 1),           # manifest removed, shard not
    ("extend", "synthfer.io.shards:ShardStore.retract", "after", 1),            # partial shard retracted
    ("overwrite", "synthfer.build:_clear", "after", 1),                         # the old build cleared
    ("overwrite", "synthfer.io.local_folder:LocalFolder.remove", "after", 3),   # mid-clear
]
ALL_POINTS = POINTS + [
    ("fresh", "synthfer.io.shards:ShardStore.commit", "before", 1),
    ("fresh", "synthfer.io.shards:ShardStore.commit", "after", 2),
    ("fresh", "synthfer.io.local_folder:LocalFolder.write_all", "after", 1),    # fingerprint.json only
    ("fresh", "synthfer.io.local_folder:LocalFolder.write_all", "after", 6),    # the manifest published
    ("fresh", "synthfer.build:merge_parts", "after", 1),                        # run.json not yet
    ("resume", "synthfer.io.shards:ShardStore.retract", "after", 1),
    ("resume", "synthfer.io.local_folder:LocalFolder.remove", "after", 1),
    ("resume", "synthfer.io.shards:ShardStore.commit", "after", 1),
    ("extend", "synthfer.io.shards:ShardStore.retract", "before", 1),
    ("extend", "synthfer.io.local_folder:LocalFolder.write_all", "after", 2),
    ("extend", "synthfer.io.shards:ShardStore.commit", "after", 2),
    ("extend", "synthfer.build:merge_parts", "before", 1),
    ("overwrite", "synthfer.build:_clear", "before", 1),
    ("overwrite", "synthfer.io.shards:ShardStore.retract", "after", 2),
    ("overwrite", "synthfer.io.local_folder:LocalFolder.remove", "after", 1),
    ("overwrite", "synthfer.io.shards:ShardStore.commit", "after", 1),
    ("overwrite", "synthfer.build:merge_parts", "after", 1),
]


@dataclass
class Outcome:
    scenario: str
    point: str
    killed: bool           # the kill point was reached (exit -9)
    violations: list[str]  # invariants broken by what the kill left
    identical: bool        # the rerun's dataset equals the reference


def cli(args: list[str], kill: tuple[str, str, int] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    prefix = ["-m", "tests.killpoints", kill[0], kill[1], str(kill[2]), "--"] if kill else ["-m", "synthfer"]
    return subprocess.run([sys.executable, *prefix, *args], capture_output=True, text=True, cwd=cwd or REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=HANG_GUARD_S)


def dataset(out: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
             if p.is_file() and str(p.relative_to(out)).startswith(("data/", "rejected/", "_synthfer/parts/"))}
    for name in ("manifest.parquet", "calibration.json"):
        if (out / name).exists():
            files[name] = (out / name).read_bytes()
    return files


def violations(out: Path) -> list[str]:
    """What a reader could see wrong in `out` right now."""
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.manifest import read_manifest, read_table
    from synthfer.io.shards import ShardStore

    folder = LocalFolder(out)
    store = ShardStore(folder)
    found, committed = [], {}
    for index in store.marker_indices():
        marker = store.read_marker(index)
        problem = store.problem(index, marker, hashes=True)
        if problem:
            found.append(f"visible shard {index}: {problem}")
        else:
            committed[index] = marker
    if not out.exists():
        return found
    if folder.exists("manifest.parquet"):
        table = read_manifest(folder, "manifest.parquet")
        for index in sorted(set(table.column("shard").to_pylist())):
            if index not in committed:
                found.append(f"manifest lists shard {index}, which is not committed")
                continue
            part = read_table(folder.read_bytes(store.layout.part(index)))
            if not table.filter(pc.equal(table.column("shard"), index)).equals(part):
                found.append(f"manifest rows of shard {index} differ from its part")
    return found


def prepare(scenario: str, work: Path, recipe_text: str = RECIPE) -> tuple[Path, Path]:
    """A recipe and an output in the state the scenario starts from."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    recipe = work / "recipe.yaml"
    recipe.write_text(recipe_text)
    out = work / "out"
    for args in SCENARIOS[scenario][0]:
        done = cli(["build", str(recipe), "-q", "--output", str(out), *args])
        assert done.returncode == 0, done.stderr
    if scenario == "resume":   # a damaged shard: resume must retract and rebuild it
        tar = out / "data" / "val-000001.tar"
        data = bytearray(tar.read_bytes())
        data[700] ^= 0xFF
        tar.write_bytes(bytes(data))
    return recipe, out


def reference(work: Path, recipe_text: str = RECIPE) -> dict[str, bytes]:
    """The dataset of an uninterrupted fresh build of the final recipe."""
    recipe, out = prepare("fresh", work, recipe_text)
    done = cli(["build", str(recipe), "-q", "--output", str(out)])
    assert done.returncode == 0, done.stderr
    return dataset(out)


def run_point(scenario: str, target: str, when: str, nth: int, work: Path, expected: dict,
              recipe_text: str = RECIPE) -> Outcome:
    recipe, out = prepare(scenario, work, recipe_text)
    before = violations(out) if out.exists() else []   # the resume scenario's damage is the user's, not the kill's
    final = ["build", str(recipe), "-q", "--output", str(out), *SCENARIOS[scenario][1]]
    killed = cli(final, kill=(target, when, nth))
    outcome = Outcome(scenario, f"{target} {when} {nth}", killed.returncode == -signal.SIGKILL,
                      [v for v in violations(out) if v not in before], False)
    rerun = cli(final)
    outcome.identical = rerun.returncode == 0 and dataset(out) == expected and not list(out.rglob("*.tmp-*"))
    return outcome


def run_random(scenario: str, work: Path, expected: dict, rng: random.Random) -> Outcome:
    """A SIGKILL at a random moment of the scenario's final command: right after its k-th JSON
    event (k random, 1-5; a 4-shard build emits at least 8 before its summary), so the kill lands
    inside the build however fast the machine is, at a different stage for each k."""
    recipe, out = prepare(scenario, work)
    before = violations(out) if out.exists() else []
    final = ["build", str(recipe), "-q", "--output", str(out), *SCENARIOS[scenario][1]]
    watched = [a for a in final if a != "-q"] + ["--log-format", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "synthfer", *watched], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    for _ in range(rng.randint(1, 5)):
        if not proc.stdout.readline():
            break   # the build ended first: outcome.killed says so
    proc.kill()
    proc.stdout.close()
    code = proc.wait(HANG_GUARD_S)
    outcome = Outcome(scenario, "random", code == -signal.SIGKILL,
                      [v for v in violations(out) if v not in before] if out.exists() else [], False)
    rerun = cli(final)
    outcome.identical = rerun.returncode == 0 and dataset(out) == expected and not list(out.rglob("*.tmp-*"))
    return outcome
