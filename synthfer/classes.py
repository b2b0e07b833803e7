"""Expression classes: the named groups of targets a training set is labelled and balanced by.

A class is made of circumplex directions (`sad: [sad, miserable, gloomy, depressed]`) and/or
valence/arousal anchors (`disgust: {valence: -0.68, arousal: 0.45}`), each taken at the recipe's
intensities along the anchor's direction; class `neutral` is the unedited identity. Presets
(`affectnet8`, `basic7`), the anchors of the classes people name (`disgust`, `surprised`, ...)
and their sources are in data/classes.json.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from synthfer import circumplex

NEUTRAL = "neutral"
# A class name becomes part of sample keys, tar member names and export folder names: WebDataset
# splits a key at its first dot, and a slash would name another folder.
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class ClassSpec:
    name: str
    class_id: int
    directions: tuple[str, ...] = ()                   # circumplex direction names
    anchors: tuple[tuple[float, float], ...] = ()      # (valence, arousal); only their direction counts

    @property
    def is_neutral(self) -> bool:
        return self.name == NEUTRAL


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(resources.files("synthfer").joinpath("data/classes.json").read_text("utf-8"))


def presets() -> dict[str, list[str]]:
    return table()["presets"]


def canonical(name: str) -> str | None:
    """The known class a name means (`surprised` -> `surprise`), else None."""
    key = circumplex.canonical_name(name)
    if key in table()["classes"]:
        return key
    return table()["aliases"].get(key)


def anchor(name: str) -> tuple[float, float]:
    c = table()["classes"][name]
    return c["valence"], c["arousal"]


def emotion_hint(name: str) -> str:
    """What to say about an unknown name in targets.emotions: meaning first, spelling second."""
    key = circumplex.canonical_name(name)
    cls = canonical(name)
    if cls == NEUTRAL:
        return "the unedited identity is targets.neutral: true (or class neutral in targets.classes)"
    if cls is not None:
        near = _nearest_direction(cls)
        direction = f"the direction {near!r}, or " if near else ""
        return f"not a circumplex direction; use {direction}class {cls!r} (targets.classes: [{cls}, ...])"
    spelled = circumplex.suggest(key)
    return f"did you mean {spelled!r}? `synthfer emotions` lists them" if spelled else "`synthfer emotions` lists them"


def _nearest_direction(cls: str) -> str | None:
    """A circumplex direction that means the class itself (afraid for fear), when one does."""
    by_meaning = {"happy": "happy", "sad": "sad", "surprise": "astonished", "fear": "afraid", "anger": "angry"}
    return by_meaning.get(cls)


def resolve(spec, neutral: bool) -> tuple[list[ClassSpec], list[tuple[tuple, str]]]:
    """(classes, problems) of a recipe's targets.classes. `problems` lists every problem at once as
    (path below targets.classes, message). `neutral`: whether the unedited identity is rendered."""
    problems: list[tuple[tuple, str]] = []
    if isinstance(spec, str):
        if spec not in presets():
            close = difflib.get_close_matches(spec, list(presets()), n=1, cutoff=0.5)
            problems.append(((), f"unknown preset {spec!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; presets: {', '.join(presets())}, or list class names"))
            return [], problems
        spec = presets()[spec]
    if not spec:
        problems.append(((), "no classes: name a preset, list class names or map names to directions"))
        return [], problems
    if isinstance(spec, list):
        out, seen = [], {}
        for i, name in enumerate(spec):
            cls = canonical(name) if isinstance(name, str) else None
            if cls is None:
                problems.append(((i,), _unknown_class(name)))
            elif cls in seen:
                problems.append(((i,), f"{name!r} is class {cls!r}, already listed as {seen[cls]!r}"))
            else:
                seen[cls] = name
                out.append(ClassSpec(cls, len(out), anchors=() if cls == NEUTRAL else (anchor(cls),)))
        return out, problems
    out = []
    owner: dict[str, str] = {}
    folded: dict[str, str] = {}
    for class_id, (name, members) in enumerate(spec.items()):
        if not isinstance(name, str) or not CLASS_NAME.fullmatch(name):
            problems.append(((str(name),), f"class name {name!r}: letters, digits, '_' and '-' only (up to 64, "
                                           "a letter or digit first): it becomes part of sample keys and file names"))
            continue
        if name.lower() in folded:   # one folder on a case-insensitive file system (macOS, Windows)
            problems.append(((name,), f"class {name!r} differs from class {folded[name.lower()]!r} only in case; "
                                      f"rename one"))
            continue
        folded[name.lower()] = name
        directions, anchors = [], []
        items = members if isinstance(members, list) else [] if members is None else [members]
        if name == NEUTRAL and members in ([], None, NEUTRAL):
            out.append(ClassSpec(NEUTRAL, class_id))
            continue
        for j, member in enumerate(items):
            where = (name, j) if isinstance(members, list) else (name,)
            if isinstance(member, dict):
                try:
                    v, a = float(member["valence"]), float(member["arousal"])
                except (KeyError, TypeError, ValueError):
                    problems.append((where, "an anchor is {valence: V, arousal: A}"))
                    continue
                if not (-1 <= v <= 1 and -1 <= a <= 1) or (v, a) == (0.0, 0.0) or set(member) - {"valence", "arousal"}:
                    problems.append((where, f"an anchor is {{valence: V, arousal: A}} with both in [-1, 1], not both 0, "
                                            f"got {member}"))
                    continue
                anchors.append((v, a))
            elif isinstance(member, str) and circumplex.find(member) is not None:
                direction = circumplex.find(member).name
                if direction in owner:
                    problems.append((where, f"direction {direction!r} is already in class {owner[direction]!r}"))
                owner.setdefault(direction, name)
                directions.append(direction)
            elif isinstance(member, str) and canonical(member) is not None and canonical(member) != NEUTRAL:
                anchors.append(anchor(canonical(member)))   # a known class's anchor (data/classes.json)
            else:
                problems.append((where, f"unknown direction {member!r}: " + emotion_hint(str(member))))
        if not directions and not anchors:
            problems.append(((name,), "a class needs circumplex directions or {valence, arousal} anchors"))
        out.append(ClassSpec(name, class_id, tuple(directions), tuple(anchors)))
    if any(c.is_neutral for c in out) and not neutral:
        problems.append(((), "class neutral is the unedited identity: it needs targets.neutral: true"))
    return out, problems


def _unknown_class(name) -> str:
    key = circumplex.canonical_name(str(name))
    close = difflib.get_close_matches(key, list(table()["classes"]) + list(table()["aliases"]), n=1, cutoff=0.6)
    hint = f" (did you mean {canonical(close[0])!r}?)" if close else ""
    known = ", ".join(table()["classes"])
    return f"unknown class {name!r}{hint}; known classes: {known} (and their usual names), or define it as " \
           f"a mapping name: [directions or {{valence, arousal}}]"


def class_targets(classes: list[ClassSpec], intensities: list[float]) -> list[tuple[str, ClassSpec, float, float]]:
    """(key, class, angle in degrees, intensity) of every non-neutral target of the classes, in
    class order: each direction, then each anchor, at each intensity. Keys: `{direction}-NNN`,
    `{class}-NNN` for a class's one anchor, `{class}-K-NNN` when it has several."""
    out = []
    for cls in classes:
        for direction in cls.directions:
            angle = circumplex.find(direction).angle_deg
            out += [(f"{direction}-{round(s * 100):03d}", cls, angle, s) for s in intensities]
        for k, (v, a) in enumerate(cls.anchors):
            angle, _ = circumplex.polar_from_va(v, a)
            stem = cls.name if len(cls.anchors) == 1 else f"{cls.name}-{k + 1}"
            out += [(f"{stem}-{round(s * 100):03d}", cls, angle, s) for s in intensities]
    return out


def classes_record(classes: list[ClassSpec], intensities: list[float]) -> dict:
    """classes.json of an output: id -> name, members (directions), anchors, AffectNet's index."""
    known = table()["classes"]
    out = []
    for c in classes:
        targets = [key for key, cls, _, _ in class_targets([c], intensities)]
        out.append({"id": c.class_id, "name": c.name, "directions": list(c.directions),
                    "anchors": [{"valence": v, "arousal": a} for v, a in c.anchors],
                    "targets": ["neutral"] if c.is_neutral else targets,
                    "affectnet_index": known[c.name]["affectnet_index"] if c.name in known else None})
    return {"classes": out, "anchor_source": table()["sources"]["affectnet-val-means"]}
