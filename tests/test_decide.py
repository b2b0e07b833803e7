"""Decision rules on hand-made scores; the end-to-end versions with ONNX models are in test_filters.py."""

import pytest

from synthfer.filters import Decider
from synthfer.io.records import NOT_MEASURED, UNDEFINED, Scores, score
from synthfer.plan import Target
from synthfer.recipe import Filters

NEUTRAL = Target("neutral", None, 0.0, 0.0, None, 0.0)
CALM = Target("calm-100", "calm", 0.722, -0.692, 316.2, 1.0)
HAPPY = Target("happy-100", "happy", 0.991, 0.136, 7.8, 1.0)
GOOD = {"quality": 30.0, "identity_similarity": 0.9, "pred_valence": 0.9, "pred_arousal": 0.1,
        "direction_error_deg": 2.0, "distance_error": 0.05, "magnitude_error": 0.05}


def _decider(**kw):
    decider = Decider(Filters.model_validate(kw))
    judge = decider.after_measurement
    # scores as dicts here: None means undefined for a direction, not measured otherwise
    decider.after_measurement = lambda target, values, finite: judge(target, _scores(values), finite)
    return decider


def _scores(values: dict) -> Scores:
    missing = {"direction_error_deg": UNDEFINED, "pred_angle_deg": UNDEFINED}
    return Scores(**{k: missing.get(k, NOT_MEASURED) if v is None else score(v) for k, v in values.items()})


def test_every_failing_reason_is_recorded():
    d = _decider(min_quality=20, min_identity_similarity=0.5, max_direction_error_deg=30, max_distance=0.5,
                 max_magnitude_error=0.3)
    bad = dict(GOOD, quality=10.0, identity_similarity=0.1, direction_error_deg=45.0, distance_error=0.8,
               magnitude_error=0.4)
    v = d.after_measurement(HAPPY, bad, True)
    assert v.status == "rejected"
    assert v.reasons == ("low_quality", "identity_drift", "va_direction", "va_distance", "va_magnitude")
    assert d.after_measurement(HAPPY, GOOD, True).status == "accepted"


def test_neutral_is_judged_on_quality_only():
    d = _decider(min_quality=20, max_direction_error_deg=1, max_distance=0.01)
    s = dict(GOOD, direction_error_deg=None, distance_error=0.9, identity_similarity=None)
    assert d.after_measurement(NEUTRAL, s, True).status == "accepted"
    assert d.after_measurement(NEUTRAL, dict(s, quality=5.0), True).reasons == ("low_quality",)


@pytest.mark.parametrize("action, status, reasons", [
    ("reject", "rejected", ("failure_band",)),
    ("verify", "accepted", ()),
])
def test_band_actions_after_measurement(action, status, reasons):
    d = _decider(max_direction_error_deg=30, failure_bands=[{"from_deg": 242, "to_deg": 329, "action": action}])
    v = d.after_measurement(CALM, GOOD, True)
    assert (v.status, v.reasons) == (status, reasons)
    assert d.before_generation(CALM) is None


def test_skip_band_needs_no_image_and_bands_wrap():
    d = _decider(failure_bands=[{"from_deg": 300, "to_deg": 10, "action": "skip"}])
    assert d.before_generation(CALM).status == "skipped" and d.before_generation(HAPPY).status == "skipped"
    assert d.before_generation(NEUTRAL) is None
    assert d.before_generation(Target("tense-100", "tense", 0, 1, 92.8, 1.0)) is None


def test_verify_band_uses_its_own_stricter_limits():
    d = _decider(max_direction_error_deg=30,
                 failure_bands=[{"from_deg": 242, "to_deg": 329, "action": "verify", "max_direction_error_deg": 10}])
    s = dict(GOOD, direction_error_deg=20.0)
    assert d.after_measurement(CALM, s, True).reasons == ("va_direction",)
    assert d.after_measurement(HAPPY, s, True).status == "accepted"   # outside the band: global 30


def test_non_finite_and_null_scores():
    d = _decider(min_quality=20, max_direction_error_deg=30)
    assert d.after_measurement(HAPPY, dict(GOOD, pred_valence=float("nan")), True).reasons == ("non_finite",)
    assert d.after_measurement(HAPPY, GOOD, False).reasons == ("non_finite",)
    # a score that was never measured (None) is not a failure of any threshold
    assert d.after_measurement(HAPPY, {"quality": None}, True).status == "accepted"
    # a prediction at the exact origin has no direction: it cannot pass a direction limit
    origin = dict(GOOD, pred_valence=0.0, pred_arousal=0.0, direction_error_deg=None)
    assert d.after_measurement(HAPPY, origin, True).reasons == ("va_direction",)


def test_most_severe_band_wins():
    d = _decider(max_distance=1, failure_bands=[{"from_deg": 300, "to_deg": 330, "action": "verify"},
                                                {"from_deg": 310, "to_deg": 320, "action": "skip"}])
    assert d.before_generation(CALM).status == "skipped"
