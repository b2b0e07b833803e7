"""SIGKILL at named steps of commit, retract, clear, merge and publish (tests/crash.py): what a
reader sees after each kill is consistent, and the rerun gives the uninterrupted build's bytes.
The full set (more points, random moments) is tools/crash_test.py."""

from __future__ import annotations

import pytest

from tests import crash


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    return crash.reference(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("scenario, target, when, nth", crash.POINTS,
                         ids=[f"{s}-{t.rsplit(':', 1)[1]}-{w}-{n}" for s, t, w, n in crash.POINTS])
def test_kill_then_rerun(scenario, target, when, nth, tmp_path, expected):
    outcome = crash.run_point(scenario, target, when, nth, tmp_path / "work", expected)
    assert outcome.killed, "the kill point was never reached"
    assert outcome.violations == []
    assert outcome.identical


def test_overwrite_killed_after_the_clear_leaves_no_manifest_of_deleted_shards(tmp_path):
    recipe, out = crash.prepare("overwrite", tmp_path / "work")
    assert (out / "manifest.parquet").exists()
    killed = crash.cli(["build", str(recipe), "-q", "--output", str(out), "--mode", "overwrite"],
                       kill=("synthfer.build:_clear", "after", 1))
    assert killed.returncode == -9
    assert not (out / "manifest.parquet").exists() and not list((out / "_synthfer" / "parts").glob("*.done.json"))
    assert crash.violations(out) == []


def test_a_kill_at_a_random_moment(tmp_path, expected):
    import random
    for seed in (7, 8):
        outcome = crash.run_random("fresh", tmp_path / f"work{seed}", expected, random.Random(seed))
        assert outcome.killed and outcome.violations == [] and outcome.identical, outcome


def test_a_corrected_build_killed_after_its_pilot_and_rerun_gives_the_same_bytes(tmp_path):
    expected = crash.reference(tmp_path / "reference", crash.CORRECTED)
    assert "calibration.json" in expected and any(k.startswith("data/") for k in expected)
    outcome = crash.run_point("fresh", "synthfer.calibrate:calibrate", "after", 1, tmp_path / "work", expected,
                              crash.CORRECTED)
    assert outcome.killed and outcome.violations == [] and outcome.identical
