"""Russell's circumplex: the 28 named directions, VA <-> (angle, intensity), wrapped angles.

Angles are degrees counter-clockwise from +valence, in [0, 360). A target at angle theta and
intensity s sits at valence = s*cos(theta), arousal = s*sin(theta).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Emotion:
    name: str          # canonical, dash-separated: "at-ease"
    angle_deg: float   # the toolkit's angle
    paper_deg: int     # the paper's rounded angle

    @property
    def valence(self) -> float:
        return math.cos(math.radians(self.angle_deg))

    @property
    def arousal(self) -> float:
        return math.sin(math.radians(self.angle_deg))


@lru_cache(maxsize=1)
def emotions() -> tuple[Emotion, ...]:
    """All 28 named directions in table (angle) order, read from the table shipped in the wheel."""
    text = resources.files("synthfer").joinpath("data/circumplex.csv").read_text("utf-8")
    rows = [line for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(
        Emotion(r["name"], float(r["angle_deg"]), int(r["paper_deg"]))
        for r in csv.DictReader(io.StringIO("\n".join(rows)))
    )


def canonical_name(name: str) -> str:
    """Case-insensitive; `at ease`, `at_ease` and `at-ease` are one name."""
    return "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def find(name: str) -> Emotion | None:
    key = canonical_name(name)
    return next((e for e in emotions() if e.name == key), None)


def suggest(name: str) -> str | None:
    """The closest known name, for 'did you mean' messages."""
    close = difflib.get_close_matches(canonical_name(name), [e.name for e in emotions()], n=1, cutoff=0.5)
    return close[0] if close else None


def va_from_polar(angle_deg: float, intensity: float) -> tuple[float, float]:
    rad = math.radians(angle_deg)
    return intensity * math.cos(rad), intensity * math.sin(rad)


def polar_from_va(valence: float, arousal: float) -> tuple[float | None, float]:
    """(angle in [0, 360), intensity). The angle is None at the origin, where it means nothing."""
    intensity = math.hypot(valence, arousal)
    if intensity == 0.0:
        return None, 0.0
    return math.degrees(math.atan2(arousal, valence)) % 360.0, intensity


def angular_difference(a_deg: float, b_deg: float) -> float:
    """Unsigned smallest difference between two directions, in [0, 180]."""
    d = abs(a_deg - b_deg) % 360.0
    return min(d, 360.0 - d)


def in_band(angle_deg: float, from_deg: float, to_deg: float) -> bool:
    """Whether angle lies in the band from `from_deg` counter-clockwise to `to_deg` (inclusive).

    A band may wrap through 0: from 350 to 10 covers 350..360 and 0..10.
    """
    if to_deg - from_deg >= 360.0:  # 0 -> 360: the whole circle
        return True
    a, lo, hi = angle_deg % 360.0, from_deg % 360.0, to_deg % 360.0
    return lo <= a <= hi if lo <= hi else (a >= lo or a <= hi)
