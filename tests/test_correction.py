"""Closed-loop expression correction on a known-answer pair (synthfer/models/known_answer.py):
an editor whose image carries the request, an ONNX estimator that reads it back turned by 35
degrees and shrunk inside 242-329 degrees. Band directions 277-329 have a request that lands on
them (correction must find it); 242-277 have none (correction must not make them worse)."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
import yaml

from synthfer.models import known_answer

RESCUABLE = ["calm", "relaxed", "satisfied", "at-ease", "content", "serene"]   # 316-329 degrees
UNREACHABLE = ["droopy", "tired", "sleepy"]                                  # 257-272 degrees
OUTSIDE = ["happy", "sad", "glad"]


@pytest.fixture(scope="module", autouse=True)
def canvas_kinds():
    known_answer.register()
    yield
    from synthfer.models import registry
    registry.unregister("generator", "canvas")
    registry.unregister("editor", "canvas")


@pytest.fixture
def known_recipe(tmp_path):
    (tmp_path / "va.onnx").write_bytes(known_answer.estimator_bytes())

    def write(name: str, correction: dict | None = None, **extra) -> str:
        recipe = {
            "name": "known-answer", "seed": 3, "identities": {"count": 4},
            "targets": {"emotions": RESCUABLE + UNREACHABLE + OUTSIDE, "intensities": [0.4, 0.7], "neutral": True},
            "models": {"generator": {"kind": "canvas"}, "editor": {"kind": "canvas"},
                       "va": known_answer.va_block("va.onnx")},
            "filters": {"max_direction_error_deg": 10,
                        "failure_bands": [{"from_deg": 242, "to_deg": 329, "action": "verify"}]},
            "output": {"dir": name, "samples_per_shard": 50, "image": {"format": "png", "size": 16},
                       "splits": {"train": 0.5, "val": 0.5, "test": 0.0}},
            "execution": {"device": "cpu", "batch_size": 8},
        }
        if correction is not None:
            recipe["correction"] = correction
        for dotted, value in extra.items():
            node = recipe
            *path, last = dotted.split("__")
            for p in path:
                node = node[p]
            node[last] = value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return str(path)
    return write


def _rows(out) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def _direction(row) -> str:
    return row["target"].rsplit("-", 1)[0]


def _of(rows, names):
    return [r for r in rows.values() if _direction(r) in names]


def _mean(values):
    return sum(values) / len(values)


def test_iterate_rescues_what_can_be_rescued_and_leaves_the_rest_of_the_circle_alone(cli, known_recipe, tmp_path):
    assert cli("build", known_recipe("off"), "-q").exit_code == 0
    spec = {"mode": "iterate", "steps": 3, "tolerance_deg": 5}
    result = cli("build", known_recipe("on", spec), "-q")
    assert result.exit_code == 0, result.output
    off, on = _rows(tmp_path / "off"), _rows(tmp_path / "on")

    before, after = _of(off, RESCUABLE), _of(on, RESCUABLE)
    assert 33 < _mean([r["direction_error_deg"] for r in before]) < 37          # the known 35 degree miss
    assert all(r["status"] == "rejected" for r in before)
    assert _mean([r["direction_error_deg"] for r in after]) < 5                 # under the tolerance
    assert all(r["status"] == "accepted" and r["direction_error_deg"] < 5 for r in after)
    for r in after:   # the label stays the target; the request moved 35 degrees back
        assert (r["target_valence"], r["target_arousal"]) == (off[r["key"]]["target_valence"],
                                                              off[r["key"]]["target_arousal"])
        requested = math.degrees(math.atan2(r["requested_arousal"], r["requested_valence"])) % 360
        assert abs(requested - (r["target_angle_deg"] - 35)) < 2
        assert r["attempts"] == len(r["attempt_errors"]) == len(r["attempt_pred_valence"]) == 2  # rotate: one step

    for r in _of(on, UNREACHABLE):   # no request lands there: never worse than the first render
        assert r["status"] == "rejected" and r["attempts"] == 4
        assert r["distance_error"] <= r["attempt_errors"][0] + 1e-6

    untouched = _of(on, OUTSIDE) + [r for r in on.values() if r["target"] == "neutral"]
    assert untouched and all(r["attempts"] == 1 and r["attempt_errors"] in ([], [pytest.approx(r["distance_error"],
                                                                                                abs=1e-6)])
                             for r in untouched)
    assert all(r["image_sha256"] == off[r["key"]]["image_sha256"] for r in untouched)   # byte-identical

    run = json.loads((tmp_path / "on" / "run.json").read_text())
    band = run["counts"]["correction"]["by_band"]["242-329 verify"]
    assert band["accepted"] == len(after) and band["accepted_first_render"] == 0
    assert band["renders"] == sum(r["attempts"] for r in _of(on, RESCUABLE + UNREACHABLE))
    assert band["renders_per_accepted_without"] is None   # nothing in the band was accepted without correction


def test_calibration_alone_rescues_with_one_render_per_sample(cli, known_recipe, tmp_path):
    assert cli("build", known_recipe("off"), "-q").exit_code == 0
    result = cli("build", known_recipe("cal", {"mode": "calibrate", "pilot_identities": 2, "bin_deg": 10}))
    assert result.exit_code == 0, result.output
    assert "calibrating with a pilot of 2 identities x 24 targets (48 renders)" in result.stderr
    off, cal = _rows(tmp_path / "off"), _rows(tmp_path / "cal")
    assert all(r["status"] == "accepted" and r["attempts"] == 1 for r in _of(cal, RESCUABLE))
    assert all(r["image_sha256"] == off[r["key"]]["image_sha256"] for r in _of(cal, OUTSIDE))  # bins not applied
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    applied = [b for b in doc["bins"] if b["applied"]]
    assert applied and all(abs(b["rotation_deg"] - 35) < 1 and abs(b["shrink"] - 0.8) < 0.02 for b in applied
                           if b["from_deg"] >= 280)
    assert doc["pilot"]["renders"] == 48
    # Reused by another recipe with the same models: the same pixels, no pilot.
    again = cli("build", known_recipe("reuse", {"mode": "calibrate", "calibration": str(tmp_path / "cal" /
                                                                                      "calibration.json")}))
    assert again.exit_code == 0, again.output
    assert "calibrating" not in again.stderr and "using the calibration in" in again.stderr
    reuse = _rows(tmp_path / "reuse")
    assert all(reuse[k]["image_sha256"] == r["image_sha256"] for k, r in cal.items())
    # ... and refused with other weights (the estimator the calibration was fitted to differs).
    (tmp_path / "other.onnx").write_bytes(known_answer.estimator_bytes(rotate_deg=20))
    other = cli("build", known_recipe("other", {"mode": "calibrate", "calibration": str(tmp_path / "cal" /
                                                                                       "calibration.json")},
                                      models__va__path="other.onnx"))
    assert other.exit_code == 2
    assert "was made with other weights (va differ); use it with the same models" in other.stderr
    assert not (tmp_path / "other").exists()   # refused before anything was written
    from synthfer.correction import _content_sha256

    doc["bins"][0]["factor"] = ["0", "0"]
    doc["sha256"] = _content_sha256(doc)   # consistent, but a factor no request can be divided by
    (tmp_path / "broken.json").write_text(json.dumps(doc))
    broken = cli("build", known_recipe("broken", {"mode": "calibrate", "calibration": str(tmp_path / "broken.json")}))
    assert broken.exit_code == 2 and not (tmp_path / "broken").exists()
    assert f"correction.calibration: {tmp_path / 'broken.json'}: not a usable calibration: bin " in broken.stderr
    # A byte flipped in the output's own calibration.json: never reused, the pilot runs again.
    own = tmp_path / "cal" / "calibration.json"
    good = own.read_bytes()
    own.write_bytes(good.replace(b'"shrink": 0.8', b'"shrink": 0.9', 1))
    assert own.read_bytes() != good
    rerun = cli("build", known_recipe("cal", {"mode": "calibrate", "pilot_identities": 2, "bin_deg": 10}))
    assert rerun.exit_code == 0, rerun.output
    assert "its content does not match its sha256 (damaged or edited): calibrating again" in rerun.stderr
    assert own.read_bytes() == good


def test_both_and_the_batch_size_change_nothing_but_speed(cli, known_recipe, tmp_path):
    spec = {"mode": "both", "steps": 2, "pilot_identities": 2}
    assert cli("build", known_recipe("b8", spec), "-q").exit_code == 0
    assert cli("build", known_recipe("b3", spec, execution__batch_size=3), "-q").exit_code == 0
    a, b = _rows(tmp_path / "b8"), _rows(tmp_path / "b3")
    assert [r["image_sha256"] for r in a.values()] == [b[k]["image_sha256"] for k in a]
    assert [r["attempts"] for r in a.values()] == [b[k]["attempts"] for k in a]
    assert all(r["status"] == "accepted" for r in _of(a, RESCUABLE + OUTSIDE))


def test_a_noise_estimator_ends_and_never_keeps_a_worse_render(cli, write_recipe, tmp_path):
    # The builtin VA stand-in reads faces as pseudo-random directions: noise to the corrector.
    result = cli("build", write_recipe("""\
        name: noise
        seed: 5
        identities: {count: 4}
        targets: {emotions: [happy, sad, calm], intensities: [0.5, 1.0], neutral: false}
        models: {va: {kind: builtin}}
        output: {dir: out, samples_per_shard: 12, image: {format: png, size: 32}, splits: {train: 0.5, val: 0.5, test: 0}}
        execution: {device: cpu, batch_size: 4}
        correction: {mode: iterate, steps: 3, tolerance_deg: 2}
        """), "-q")
    assert result.exit_code == 0, result.output
    rows = list(_rows(tmp_path / "out").values())
    assert rows and all(1 <= r["attempts"] <= 4 for r in rows)
    assert any(r["attempts"] > 1 for r in rows)
    for r in rows:
        if r["direction_error_deg"] > 2:   # not within the tolerance: the best distance of all attempts
            assert r["distance_error"] == pytest.approx(min(e for e in r["attempt_errors"] if e is not None), abs=1e-5)
            assert r["distance_error"] <= r["attempt_errors"][0] + 1e-5


def test_refilter_of_a_corrected_build_equals_a_fresh_build(cli, known_recipe, tmp_path):
    spec = {"mode": "iterate", "steps": 2}
    strict = known_recipe("re", spec, filters__max_direction_error_deg=0.05)
    assert cli("build", strict, "-q").exit_code == 0
    loose = known_recipe("re", spec)   # only a filter changed: committed shards are re-decided
    rebuilt = cli("build", loose, "-q")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert cli("build", known_recipe("fresh", spec), "-q").exit_code == 0
    a, b = _rows(tmp_path / "re"), _rows(tmp_path / "fresh")
    assert [(r["status"], r["image_sha256"], r["attempts"]) for r in a.values()] == \
           [(b[k]["status"], b[k]["image_sha256"], b[k]["attempts"]) for k in a]


def test_recipe_mistakes_and_plan(cli, write_recipe, tmp_path):
    base = "name: c\nidentities: {count: 4}\noutput: {samples_per_shard: 10}\n"
    no_va = cli("validate", write_recipe(base + "correction: {mode: iterate}\n", "a.yaml"))
    assert no_va.exit_code == 2
    assert "correction.mode: iterate corrects toward the VA estimator's reading: needs models.va" in no_va.stderr
    missing = cli("validate", write_recipe(base + "models: {va: {kind: builtin}}\n"
                                           "correction: {mode: calibrate, calibration: nope.json}\n", "b.yaml"))
    assert missing.exit_code == 2
    assert f"correction.calibration: file not found: {tmp_path / 'nope.json'}" in missing.stderr
    unused = cli("validate", write_recipe(base + "models: {va: {kind: builtin}}\n"
                                          "correction: {mode: iterate, calibration: x.json}\n", "c.yaml"))
    assert unused.exit_code == 2 and "a calibration is used by mode calibrate or both, not iterate" in unused.stderr
    plan = cli("plan", write_recipe(base.replace("10}", "3}") + "targets: {emotions: [happy, sad], intensities: [1.0], neutral: true}\n"
                                    "models: {va: {kind: builtin}}\n"
                                    "correction: {mode: both, steps: 2, pilot_identities: 3}\n", "d.yaml"))
    assert plan.exit_code == 0, plan.output
    assert ("correction: calibration pilot: 3 identities x 2 targets = 6 renders; iterate: at most 2 more renders "
            "for each of 8 edited samples (up to 16 more)") in plan.stdout.replace("\n", " ")
    # the rate of an existing output is quoted only when that output was built iterating; a bare
    # `off` (YAML 1.1's false) is the mode off, in a file as in --set
    recipe = tmp_path / "d.yaml"
    off = write_recipe(recipe.read_text().replace("mode: both", "mode: off"), "off.yaml")
    assert cli("validate", off).exit_code == 0
    assert cli("build", recipe, "-q", "--set", "correction.mode=off").exit_code == 0
    assert "at the rate measured" not in cli("plan", recipe).stdout
    assert cli("build", recipe, "-q", "--mode", "overwrite").exit_code == 0
    assert "at the rate measured in" in " ".join(cli("plan", recipe).stdout.split())


@pytest.mark.parametrize("bin_deg", [7.3, 2.2, 15.0, 11.25])
def test_calibration_json_reloads_every_bin_where_it_was(bin_deg):
    # from_deg is stored rounded to 6 places; reloading must not move a bin (7.3 deg: 3 * 7.3 =
    # 21.9 -> 21.899999... floored into bin 2 before), or one factor would overwrite another.
    from synthfer.correction import Calibration

    n = math.ceil(360.0 / bin_deg)
    bins = {(b, k): {"factor": complex(1.0 + b / 100, k / 10), "applied": b % 2 == 0, "samples": b + 1,
                     "mean_direction_error_deg": float(b)} for b in range(n) for k in (0.5, 1.0)}
    cal = Calibration(bin_deg, bins, {"identities": 3})
    again = Calibration.from_json(cal.to_json(), "calibration.json")
    assert again.bins == bins
    assert again.to_json() == cal.to_json()
