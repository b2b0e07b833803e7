"""Training sets by the class: presets and aliases, quotas met exactly by top-up rounds, the same
bytes however a quota build is scheduled or interrupted, refilter from stored scores, splits that
are never empty, warnings and --strict."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthfer import classes
from synthfer.plan import Plan
from synthfer.recipe import Recipe
from tests.conftest import REPO, dataset_files, error_lines

# 3 classes x 1 intensity (+ neutral): 3 targets; quota 10 = 8 train, 1 val, 1 test.
QUOTA = """\
name: quota
seed: 5
identities: {count: 12, max_count: 200}
targets: {classes: [neutral, happy, sad], intensities: [1.0], quota: 10}
models: {quality: {kind: builtin}, va: {kind: builtin}}
filters: {min_quality: 20, max_direction_error_deg: 45}
output: {dir: out, samples_per_shard: 12, image: {format: png, size: 16}}
execution: {device: cpu, batch_size: 8}
"""


def _data(out: Path) -> dict[str, bytes]:
    files = dataset_files(out)
    files["classes.json"] = (out / "classes.json").read_bytes()
    return files


def _child(*args, kill=None):
    prefix = ["-m", "tests.killpoints", *kill, "--"] if kill else ["-m", "synthfer"]
    return subprocess.run([sys.executable, *prefix, *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from typer.testing import CliRunner

    from synthfer.cli import app
    folder = tmp_path_factory.mktemp("quota")
    (folder / "recipe.yaml").write_text(QUOTA)
    result = CliRunner().invoke(app, ["build", str(folder / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    return folder, _data(folder / "out"), result


# ---------------------------------------------------------------- classes


def test_presets_take_their_anchors_and_affectnet_numbering():
    plan = Plan(Recipe.model_validate({"targets": {"classes": "affectnet8", "intensities": [0.5, 1.0]},
                                       "output": {"samples_per_shard": 15}}))
    assert [t.key for t in plan.targets][:5] == ["neutral", "happy-050", "happy-100", "sad-050", "sad-100"]
    assert {t.class_name: t.class_id for t in plan.targets} == {
        "neutral": 0, "happy": 1, "sad": 2, "surprise": 3, "fear": 4, "disgust": 5, "anger": 6, "contempt": 7}
    disgust = plan.target_by_key["disgust-100"]   # AffectNet's validation mean, as a direction
    assert disgust.angle_deg == pytest.approx(146.9, abs=0.05) and disgust.intensity == 1.0
    basic = Recipe.model_validate({"targets": {"classes": "basic7"}}).targets.class_list()
    assert [c.name for c in basic] == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]


def test_usual_names_are_aliases_and_a_mapping_mixes_directions_and_anchors():
    names = ["happiness", "sadness", "Surprised", "afraid", "disgusted", "angry", "contemptuous"]
    assert [classes.canonical(n) for n in names] == ["happy", "sad", "surprise", "fear", "disgust", "anger",
                                                      "contempt"]
    recipe = Recipe.model_validate({"targets": {"classes": {
        "low": ["sad", "miserable", {"valence": -0.2, "arousal": -0.9}], "yuck": ["disgust"]}, "intensities": [1.0]},
        "output": {"samples_per_shard": 40}})
    plan = Plan(recipe)
    assert [t.key for t in plan.targets] == ["sad-100", "miserable-100", "low-100", "yuck-100"]
    assert [t.class_name for t in plan.targets] == ["low", "low", "low", "yuck"]
    assert plan.recipe.targets.neutral is False   # no neutral class: the unedited identity is no target


def test_every_unknown_name_is_reported_at_once_with_hints_by_meaning(cli, write_recipe):
    recipe = write_recipe("targets:\n  emotions: [happy, surprised, disgusted, fear, contempt, neutral, hapy]\n")
    result = cli("validate", recipe)
    assert result.exit_code == 2
    assert [line.split(": ", 3)[-1] for line in result.stderr.strip().splitlines()] == [
        "unknown emotion 'surprised': not a circumplex direction; use the direction 'astonished', or class "
        "'surprise' (targets.classes: [surprise, ...])",
        "unknown emotion 'disgusted': not a circumplex direction; use class 'disgust' (targets.classes: [disgust, ...])",
        "unknown emotion 'fear': not a circumplex direction; use the direction 'afraid', or class 'fear' "
        "(targets.classes: [fear, ...])",
        "unknown emotion 'contempt': not a circumplex direction; use class 'contempt' (targets.classes: [contempt, ...])",
        "unknown emotion 'neutral': the unedited identity is targets.neutral: true (or class neutral in "
        "targets.classes)",
        "unknown emotion 'hapy': did you mean 'happy'? `synthfer emotions` lists them",
    ]
    bad = cli("validate", write_recipe("targets:\n  classes: [happy, joyy, sadd, happiness]\n", "c.yaml"))
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 3
    assert "targets.classes[1]: unknown class 'joyy' (did you mean 'happy'?)" in bad.stderr
    assert "targets.classes[3]: 'happiness' is class 'happy', already listed as 'happy'" in bad.stderr


def test_class_names_that_would_break_keys_or_paths_and_empty_classes_are_refused(cli, write_recipe):
    # A class name is part of sample keys and tar member names: a dot splits a WebDataset key, a
    # slash names another folder. An empty classes value would silently drop the quota.
    recipe = write_recipe('targets:\n  intensities: [1.0]\n  classes: {"v1.0": [happy], "../esc": [sad], "": [calm], '
                          'ok_Name-2: [{valence: 0.5, arousal: 0.5}], neutral: []}\n')
    result = cli("validate", recipe)
    assert result.exit_code == 2
    rule = ("letters, digits, '_' and '-' only (up to 64, a letter or digit first): it becomes part of sample keys "
            "and file names")
    assert [line.split(": ", 2)[-1] for line in result.stderr.strip().splitlines()] == [
        f"targets.classes['v1.0']: class name 'v1.0': {rule}",
        f"targets.classes['../esc']: class name '../esc': {rule}",
        f"targets.classes['']: class name '': {rule}",
    ]
    same = cli("validate", write_recipe("targets:\n  classes: {happy: [happy], Sad: [sad], sad: [gloomy], calm: null}\n",
                                        "s.yaml"))
    assert [line.split(": ", 2)[-1] for line in same.stderr.strip().splitlines()] == [
        "targets.classes.sad: class 'sad' differs from class 'Sad' only in case; rename one",
        "targets.classes.calm: a class needs circumplex directions or {valence, arousal} anchors"]
    for empty in ("[]", "{}"):
        result = cli("validate", write_recipe(f"targets:\n  classes: {empty}\n  quota: 3\n", "e.yaml"))
        assert result.exit_code == 2
        assert result.stderr.strip().endswith("targets.classes: no classes: name a preset, list class names or map "
                                              "names to directions")


def test_classes_reach_the_manifest_labels_and_classes_json(reference):
    folder, _, _ = reference
    out = folder / "out"
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {(r["target"], r["class"], r["class_id"]) for r in rows} == {
        ("neutral", "neutral", 0), ("happy-100", "happy", 1), ("sad-100", "sad", 2)}
    record = json.loads((out / "classes.json").read_text())
    assert [(c["id"], c["name"], c["targets"]) for c in record["classes"]] == [
        (0, "neutral", ["neutral"]), (1, "happy", ["happy-100"]), (2, "sad", ["sad-100"])]
    assert "AffectNet" in record["anchor_source"]
    import tarfile
    labels = []
    for path in sorted((out / "data").glob("*.tar")):
        with tarfile.open(path) as tar:
            labels += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith(".json")]
    assert labels
    for label in labels:
        row = next(r for r in rows if r["key"] == label["key"])
        assert (label["class"], label["class_id"]) == (row["class"], row["class_id"])


# ---------------------------------------------------------------- quotas


def test_quotas_are_met_exactly_by_top_up_rounds(reference):
    folder, _, result = reference
    rows = pq.read_table(folder / "out" / "manifest.parquet").to_pylist()
    accepted = Counter((r["class"], r["split"]) for r in rows if r["status"] == "accepted")
    assert accepted == {(c, s): n for c in ("neutral", "happy", "sad") for s, n in (("train", 8), ("val", 1),
                                                                                     ("test", 1))}
    assert "quota top-up round 1:" in result.stderr
    # the surplus pass re-commits shards: announced, and counted in the total it counts against
    assert re.search(r"surplus over the quotas: \d+ shards? re-decided from their stored scores", result.stderr)
    counts = [tuple(map(int, m)) for m in re.findall(r"\[(\d+)/(\d+)\]", result.stderr)]
    assert counts and all(done <= total for done, total in counts) and counts[-1][0] == counts[-1][1], counts
    top_up = [r for r in rows if r["identity"] >= 12]
    assert top_up and all(r["status"] != "skipped" for r in top_up)
    surplus = [r for r in rows if r["status"] == "surplus"]
    assert surplus and all(r["image_sha256"] is None for r in surplus)   # kept out of the shards


def test_a_quota_build_is_the_same_on_every_executor_and_after_kills(tmp_path, reference):
    folder, expected, _ = reference
    recipe = folder / "recipe.yaml"
    killed = tmp_path / "killed"
    # SIGKILL in the first top-up round (shard 6 is its first shard), then in the surplus pass
    for point in (("synthfer.io.shards:ShardStore.commit", "before", "7"),
                  ("synthfer.io.shards:ShardStore.commit", "after", "2")):
        proc = _child("build", recipe, "-q", "--output", killed, kill=point)
        assert proc.returncode == -9, proc.stderr
    assert _child("build", recipe, "-q", "--output", killed).returncode == 0
    assert _data(killed) == expected
    devices = _child("build", recipe, "-q", "--output", tmp_path / "procs", "--set", "execution.devices=[cpu, cpu]")
    assert devices.returncode == 0, devices.stderr
    assert _data(tmp_path / "procs") == expected
    pytest.importorskip("ray")
    ray = _child("build", recipe, "-q", "--output", tmp_path / "ray", "--set", "execution.executor=ray",
                 "--set", "execution.ray.workers=2")
    assert ray.returncode == 0, ray.stderr
    assert _data(tmp_path / "ray") == expected


def test_a_shards_rerun_of_a_finished_quota_build_keeps_its_top_ups_in_the_manifest(cli, tmp_path, reference):
    # --shards builds base shards only; the top-up rounds an earlier run committed are planned
    # again from the committed rows (not built, not removed), so the manifest still lists them.
    folder, expected, _ = reference
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    result = cli("build", folder / "recipe.yaml", "--output", out, "--shards", "0-1")
    assert result.exit_code == 0, result.output
    assert _data(out) == expected
    assert (out / "manifest.parquet").read_bytes() == (folder / "out" / "manifest.parquet").read_bytes()
    verify = cli("verify", out)
    assert verify.exit_code == 0 and verify.stdout.startswith("OK:"), verify.output


def test_the_report_names_class_anchors_instead_of_raw_points(cli, tmp_path, reference):
    # happy and sad are AffectNet anchors, off the named circumplex directions: each is its own
    # direction group at its angle, on the intensity sheets, and not in "named directions".
    import pandas as pd

    from synthfer.classes import anchor
    from synthfer.circumplex import polar_from_va

    folder, _, _ = reference
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    assert cli("report", out).exit_code == 0
    metrics = pd.read_csv(out / "report" / "metrics.csv")
    by_direction = metrics[(metrics["subset"] == "measured") & (metrics["grouping"] == "direction")]
    assert list(by_direction["group"]) == ["happy anchor", "sad anchor", "neutral"]
    angles = dict(zip(by_direction["group"], by_direction["angle_deg"]))
    for cls in ("happy", "sad"):
        assert angles[f"{cls} anchor"] == pytest.approx(polar_from_va(*anchor(cls))[0])
    assert "named directions" not in set(metrics["group"])
    sheets = sorted(p.name for p in (out / "report").glob("sheet-*.png"))
    assert sheets == ["sheet-100.png", "sheet-worst.png"]
    assert "| happy anchor |" in (out / "report" / "metrics.md").read_text()


def test_the_report_counts_surplus_rows_as_planned(cli, tmp_path, reference):
    # Surplus rows passed every filter but are over their quota: the report's acceptance tables
    # count them (planned = every manifest row) and name them, instead of leaving them out.
    import pandas as pd

    folder, _, _ = reference
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    result = cli("report", out)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    status = Counter(r["status"] for r in rows)
    assert status["surplus"] > 0
    metrics = pd.read_csv(out / "report" / "metrics.csv")
    overall = metrics[(metrics["subset"] == "measured") & (metrics["grouping"] == "class")]
    assert overall["planned"].sum() == len(rows) and overall["surplus"].sum() == status["surplus"]
    assert overall["accepted"].sum() == status["accepted"]
    assert f"surplus {status['surplus']:,}" in (out / "report" / "metrics.md").read_text()


def test_a_quota_out_of_reach_ends_with_exit_4_naming_the_short_classes(cli, write_recipe, tmp_path):
    # 16 identities could hold the quota (8 train + 4 val + 4 test) if every image passed
    recipe = write_recipe(QUOTA.replace("max_count: 200", "max_count: 16"))
    result = cli("build", recipe, "--log-format", "json")
    assert result.exit_code == 4, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: quota not met within identities.max_count (16): ")
    assert "short by" in last and last.endswith("; raise identities.max_count or loosen the filters")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["event"] == "summary" and summary["complete"] is False and summary["quota_short"]


def test_refilter_from_stored_scores_equals_a_fresh_build(cli, tmp_path, reference):
    folder, _, _ = reference
    recipe = folder / "recipe.yaml"
    import shutil
    shutil.copytree(folder / "out", tmp_path / "out")
    for value in ("25", "15"):   # tighten, then loosen (images of newly kept samples are rendered again)
        again = cli("build", recipe, "--output", tmp_path / "out", "--set", f"filters.min_quality={value}",
                    "--log-format", "json")
        assert again.exit_code == 0, again.output
        assert "committed shards are re-decided from their stored scores" in again.stdout
        fresh = cli("build", recipe, "-q", "--output", tmp_path / f"fresh{value}",
                    "--set", f"filters.min_quality={value}")
        assert fresh.exit_code == 0, fresh.output
        assert _data(tmp_path / "out") == _data(tmp_path / f"fresh{value}")


# ---------------------------------------------------------------- splits, warnings


def test_too_few_identities_for_every_split_are_refused_with_what_works(cli, write_recipe):
    result = cli("validate", write_recipe("identities: {count: 20}\n"))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: output.splits: train, val, test need a shard each, but 20 identities make 2 shards of up to 12 "
        "identities (output.samples_per_shard 1000 / 85 targets); use identities.count >= 25 or "
        "output.samples_per_shard <= 765")
    plan = Plan(Recipe.model_validate({"identities": {"count": 200}}))
    assert [s.split for s in plan.shards][:4] == ["train", "val", "test", "train"]


def test_warnings_name_what_failed_and_strict_makes_them_an_exit_code(cli, write_recipe):
    recipe = write_recipe(QUOTA.replace("  quota: 10}", "}").replace(", quota: 10", ""))
    result = cli("build", recipe, "-q", "--set", "filters.min_quality=500", "--strict")
    assert result.exit_code == 5
    lines = result.stderr.strip().splitlines()
    assert lines[0] == ("Warning: 3 classes with no accepted sample: happy (0 of 12), neutral (0 of 12), "
                        "sad (0 of 12)")
    assert "Warning: split train: no accepted sample" in lines
    assert "Warning: filter low_quality rejected every rendered sample (36 of 36)" in lines
    assert lines[-1] == "Error: --strict: the build finished with 5 warnings"
    assert cli("build", recipe, "-q").exit_code == 0   # the same output, thresholds that accept some


def _refused_before_rendering(cli, recipe, line: str) -> None:
    """validate and build both exit 2 with exactly `line`, and the build writes nothing."""
    for command in ("validate", "build"):
        result = cli(command, recipe)
        assert result.exit_code == 2, result.output
        assert error_lines(result.stderr) == [line]
    assert not (recipe.parent / "out").exists()


def test_a_quota_beyond_max_count_even_at_full_acceptance_is_refused_before_rendering(cli, write_recipe):
    # neutral has one target per identity, and an identity belongs to one split. The 12 first
    # identities are 4 per split; quota 10 is 8 train, 1 val, 1 test: at least 8 + 4 + 4 = 16.
    recipe = write_recipe(QUOTA.replace("max_count: 200", "max_count: 15"))
    _refused_before_rendering(cli, recipe, "Error: targets.quota: 10 per class cannot be met within "
                              "identities.max_count 15: even if every image were accepted it takes 16 identities; "
                              "raise identities.max_count or lower the quota")
    assert cli("validate", write_recipe(QUOTA.replace("max_count: 200", "max_count: 16"), "ok.yaml")).exit_code == 0


def test_a_class_with_no_accepted_sample_in_one_split_is_a_warning():
    # A classifier trained or tested on that split never sees the class; with a quota, the quota
    # itself decides (exit 4), so no warning there.
    from types import SimpleNamespace

    import yaml

    from synthfer.recipe.schema import Recipe
    from synthfer.summary import warnings

    recipe = Recipe.model_validate(yaml.safe_load(QUOTA.replace(", quota: 10", "")))
    by_class = {"happy": {"train": {"accepted": 9, "rejected": 1}, "val": {"rejected": 2}, "test": {"accepted": 2}},
                "neutral": {"train": {"accepted": 10}, "val": {"accepted": 2}, "test": {"accepted": 2}},
                "sad": {"train": {"accepted": 8, "rejected": 2}, "val": {"accepted": 1, "rejected": 1},
                        "test": {"rejected": 2}}}
    result = SimpleNamespace(by_class=by_class, by_split={s: {"accepted": 1} for s in ("train", "val", "test")},
                             by_status={"accepted": 34, "rejected": 8}, by_reason={"low_quality": 8})
    assert warnings(result, recipe) == ["2 classes with no accepted sample in a split: happy (val), sad (test)"]
    quota = Recipe.model_validate(yaml.safe_load(QUOTA))
    assert warnings(result, quota) == []


def test_a_quota_class_wholly_in_a_skip_band_is_refused_before_rendering(cli, write_recipe):
    # sad (203 deg) is never rendered under this band, so top-up rounds could never fill it.
    recipe = write_recipe(QUOTA.replace("filters: {", "filters: {failure_bands: [{from_deg: 190, to_deg: 220, "
                                                     "action: skip}], "))
    _refused_before_rendering(cli, recipe, "Error: targets.quota: class 'sad' can never be met: every target of it "
                              "lies in a skip band of filters.failure_bands (190-220 deg); drop the class, or give "
                              "the band action reject or verify")


def test_validate_warns_about_thresholds_that_cannot_be_meant(cli, write_recipe, reference):
    folder, _, _ = reference
    bad = write_recipe("models: {va: {kind: builtin}}\nfilters:\n  max_direction_error_deg: 0.5\n"
                       "  failure_bands: [{from_deg: 329, to_deg: 242, action: skip}]\n")
    result = cli("validate", bad, "--strict")
    assert result.exit_code == 5
    assert ("Warning: filters.max_direction_error_deg: 0.5 degrees rejects almost every sample" in result.stderr
            and "filters.failure_bands[0]: covers 273 degrees, counter-clockwise from 329 to 242; from 242 to "
                "329 would cover 87 (are the ends swapped?)" in result.stderr)
    high = cli("validate", folder / "recipe.yaml", "--set", "filters.min_quality=500")
    assert high.exit_code == 0 and "filters.min_quality: 500 is above every quality the output measured" in high.stderr
    plan = cli("plan", folder / "recipe.yaml")
    assert "every quota needs about" in " ".join(plan.stdout.split())


def test_validate_and_plan_warn_when_whole_shards_skew_the_split_shares(cli, write_recipe):
    # 12 identities, 4 per shard: one shard per split is 33/33/33, not the 80/10/10 asked for;
    # with a quota the top-up rounds fill each split by itself, so no warning there.
    recipe = write_recipe(QUOTA.replace(", quota: 10", ""))
    line = ("Warning: output.splits: 3 shards of up to 4 identities give train, val, test 33/33/33% of the "
            "identities, not 80/10/10%; use a smaller output.samples_per_shard or more identities")
    for command in ("validate", "plan"):
        result = cli(command, recipe)
        assert result.exit_code == 0 and line in result.stderr.splitlines(), result.output
    assert "output.splits" not in cli("validate", write_recipe(QUOTA, "q.yaml")).stderr
    assert "output.splits" not in cli("validate", recipe, "--set", "output.samples_per_shard=3").stderr
