"""The protocol's formulas on hand-computed cases."""

import math

import numpy as np
import pytest

from synthfer import metrics


def test_errors_hand_computed():
    # target happy-ish at 0 deg intensity 1; prediction at 90 deg intensity 0.5
    e = metrics.va_errors([1.0], [0.0], [0.0], [0.5])
    assert e["pred_angle_deg"][0] == pytest.approx(90.0)
    assert e["pred_intensity"][0] == pytest.approx(0.5)
    assert e["direction_error_deg"][0] == pytest.approx(90.0)
    assert e["magnitude_error"][0] == pytest.approx(0.5)
    assert e["valence_error"][0] == pytest.approx(1.0) and e["arousal_error"][0] == pytest.approx(0.5)
    assert e["distance_error"][0] == pytest.approx(math.hypot(1.0, 0.5))


def test_wrap_around_zero_and_opposites():
    t = np.radians([359.0, 1.0, 90.0])
    p = np.radians([1.0, 359.0, 270.0])
    e = metrics.va_errors(np.cos(t), np.sin(t), np.cos(p), np.sin(p))
    assert e["direction_error_deg"] == pytest.approx([2.0, 2.0, 180.0])
    assert metrics.signed_difference([1.0, 359.0], [359.0, 1.0]) == pytest.approx([2.0, -2.0])


def test_direction_is_null_at_intensity_zero():
    e = metrics.va_errors([0.0], [0.0], [0.3], [0.4])
    assert math.isnan(e["direction_error_deg"][0])
    assert e["magnitude_error"][0] == pytest.approx(0.5) and e["distance_error"][0] == pytest.approx(0.5)


def test_ofiq_mapping_matches_the_reference_points():
    assert metrics.ofiq_quality([20, 23, 25, 28.7]) == pytest.approx([24.0, 50.0, 68.3, 90.0], abs=0.5)


def test_cosine():
    assert metrics.cosine_similarity([[1, 0], [1, 1], [0, 0]], [[2, 0], [-1, -1], [1, 0]])[:2] == pytest.approx([1, -1])
    assert math.isnan(metrics.cosine_similarity([[0, 0]], [[1, 0]])[0])
