import math

import pytest

from synthfer import circumplex


def test_table_has_the_28_directions_in_angle_order():
    names = [e.name for e in circumplex.emotions()]
    assert len(names) == 28 and len(set(names)) == 28
    angles = [e.angle_deg for e in circumplex.emotions()]
    assert angles == sorted(angles)
    assert circumplex.find("bored").angle_deg == 242.0 and circumplex.find("serene").angle_deg == 328.6


@pytest.mark.parametrize("spelling", ["at ease", "at-ease", "at_ease", "At Ease", "  AT_EASE "])
def test_names_are_forgiving(spelling):
    assert circumplex.find(spelling).name == "at-ease"


def test_did_you_mean():
    assert circumplex.suggest("hapy") == "happy"
    assert circumplex.suggest("zzzzzz") is None


def test_polar_round_trip():
    for e in circumplex.emotions():
        v, a = circumplex.va_from_polar(e.angle_deg, 0.66)
        angle, s = circumplex.polar_from_va(v, a)
        assert angle == pytest.approx(e.angle_deg, abs=1e-9) and s == pytest.approx(0.66)
    assert circumplex.polar_from_va(0.0, 0.0) == (None, 0.0)
    assert circumplex.polar_from_va(0.0, -1.0)[0] == pytest.approx(270.0)


def test_angular_difference_wraps():
    assert circumplex.angular_difference(359.0, 1.0) == pytest.approx(2.0)
    assert circumplex.angular_difference(1.0, 359.0) == pytest.approx(2.0)
    assert circumplex.angular_difference(10.0, 190.0) == pytest.approx(180.0)
    assert circumplex.angular_difference(720.5, 0.0) == pytest.approx(0.5)


def test_bands_may_wrap_through_zero():
    assert circumplex.in_band(300, 242, 329) and not circumplex.in_band(330, 242, 329)
    assert circumplex.in_band(355, 350, 10) and circumplex.in_band(5, 350, 10)
    assert not circumplex.in_band(180, 350, 10)


def test_unit_vectors_match_the_toolkit_to_three_decimals():
    happy = circumplex.find("happy")
    assert (round(happy.valence, 3), round(happy.arousal, 3)) == (0.991, 0.136)
    assert math.hypot(happy.valence, happy.arousal) == pytest.approx(1.0)
