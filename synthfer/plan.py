"""Recipe -> targets, identities, sample keys, shards and splits. Pure: no models, no files.

Prefix stability is the design rule here: base shard s always holds identities [s*n, (s+1)*n)
and its split depends only on s, so growing identities.count appends shards without touching
old ones, and any subset of shards can be built in any order. Quota top-up rounds (quota.py)
add shards of new identities after the base ones, each rendering only the targets still short.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from synthfer import circumplex
from synthfer import classes as classes_module
from synthfer.errors import UsageError
from synthfer.filters import Decider
from synthfer.recipe import Recipe, point_key

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Target:
    key: str                  # neutral | happy-100 | at-ease-033 | va-p050-m025 | disgust-100
    emotion: str | None       # named direction, None for neutral, raw points and class anchors
    valence: float
    arousal: float
    angle_deg: float | None   # None at the origin (neutral)
    intensity: float
    class_name: str = ""      # the target's class; "" without targets.classes
    class_id: int = -1        # its index in targets.classes; -1 without classes

    @property
    def is_neutral(self) -> bool:
        return self.key == "neutral"


@dataclass(frozen=True)
class Sample:
    key: str                  # {identity:07d}_{target.key}: no dots, WebDataset-safe
    identity: int
    identity_seed: int
    target: Target
    split: str


@dataclass(frozen=True)
class Shard:
    index: int
    identities: tuple[int, ...]
    split: str
    round: int = 0                       # 0: the base identities; k: the k-th quota top-up
    targets: tuple[str, ...] | None = None   # target keys it renders; None: all of the recipe's

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


def targets_of(recipe: Recipe) -> list[Target]:
    """Neutral first, then each emotion (or class member) at each intensity, then raw points:
    the key order in a shard."""
    t = recipe.targets
    classes = t.class_list()
    out = []
    if t.neutral:
        neutral_class = next((c for c in classes if c.is_neutral), None)
        out.append(Target("neutral", None, 0.0, 0.0, None, 0.0, *(_class_fields(neutral_class))))
    if classes:
        for key, cls, angle, s in classes_module.class_targets(classes, t.intensities):
            v, a = circumplex.va_from_polar(angle, s)
            emotion = key.rsplit("-", 1)[0] if circumplex.find(key.rsplit("-", 1)[0]) else None
            out.append(Target(key, emotion, v, a, angle, s, cls.name, cls.class_id))
        return out
    for emotion in t.emotion_list():
        for s in t.intensities:
            v, a = circumplex.va_from_polar(emotion.angle_deg, s)
            out.append(Target(f"{emotion.name}-{round(s * 100):03d}", emotion.name, v, a, emotion.angle_deg, s))
    for v, a in t.points:
        angle, s = circumplex.polar_from_va(v, a)
        out.append(Target(point_key(v, a), None, v, a, angle, s))
    return out


def _class_fields(cls) -> tuple[str, int]:
    return (cls.name, cls.class_id) if cls is not None else ("", -1)


def identity_seed(recipe_seed: int, identity: int) -> int:
    """Identity i's own 63-bit seed: independent streams, no shared state, no birthday collisions to speak of."""
    state = np.random.SeedSequence([recipe_seed, identity]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def split_sequence(fractions: dict[str, float], n: int) -> list[str]:
    """Split of shards 0..n-1. The first shards go one to each split with a non-zero fraction (in
    train, val, test order), so no such split is ever empty; after that each next shard goes to
    the split furthest behind its share. Shard s's split never depends on how many follow it."""
    wanted = [name for name in SPLITS if fractions[name] > 0]
    counts = dict.fromkeys(SPLITS, 0)
    out = []
    for s in range(n):
        if s < len(wanted):
            best = wanted[s]
        else:
            best = max((fractions[name] * (s + 1) - counts[name], -i, name)
                       for i, name in enumerate(SPLITS) if fractions[name] > 0)[2]
        counts[best] += 1
        out.append(best)
    return out


def identities_per_shard(samples_per_shard: int, n_targets: int) -> int:
    return max(1, round(samples_per_shard / n_targets))


class Plan:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.targets = targets_of(recipe)
        self.target_by_key = {t.key: t for t in self.targets}
        per_shard = identities_per_shard(recipe.output.samples_per_shard, len(self.targets))
        count = recipe.identities.count
        n_shards = -(-count // per_shard)
        fractions = recipe.output.splits.model_dump()
        _check_splits(recipe, fractions, count, per_shard, n_shards, len(self.targets))
        splits = split_sequence(fractions, n_shards)
        self.shards = [
            Shard(s, tuple(range(s * per_shard, min(count, (s + 1) * per_shard))), splits[s])
            for s in range(n_shards)
        ]
        _check_quota_reachable(self)
        self.base_shards = len(self.shards)
        self._seeds: dict[int, int] = {}

    def unit_of(self, target: Target) -> str:
        """What a quota counts: the target's class, or the target itself without classes ("" = none)."""
        return target.class_name if self.recipe.targets.classes is not None else target.key

    @property
    def identities_per_shard(self) -> int:
        return len(self.shards[0].identities)

    def identities_by_split(self) -> dict[str, int]:
        """Identities each split holds in the shards planned so far."""
        out = dict.fromkeys(SPLITS, 0)
        for shard in self.shards:
            out[shard.split] += len(shard.identities)
        return out

    @property
    def total_samples(self) -> int:
        return sum(len(s.identities) * len(self.shard_targets(s)) for s in self.shards)

    @property
    def next_identity(self) -> int:
        return max(i for s in self.shards for i in s.identities) + 1

    def add_round(self, shards: list[Shard]) -> None:
        """Append a quota top-up round's shards (indices continue after the last shard)."""
        assert [s.index for s in shards] == list(range(len(self.shards), len(self.shards) + len(shards)))
        self.shards.extend(shards)

    def shard_targets(self, shard: Shard) -> list[Target]:
        if shard.targets is None:
            return self.targets
        return [self.target_by_key[k] for k in shard.targets]

    def shard_rows(self, shard: Shard) -> int:
        return len(shard.identities) * len(self.shard_targets(shard))

    def composition(self, shard: Shard) -> str:
        """A digest of what a shard renders (split, round, identities, targets): a committed shard
        whose composition differs from the plan's is not the planned shard."""
        text = json.dumps([shard.split, shard.round, list(shard.identities), [t.key for t in self.shard_targets(shard)]],
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def seed_of(self, identity: int) -> int:
        if identity not in self._seeds:
            self._seeds[identity] = identity_seed(self.recipe.seed, identity)
        return self._seeds[identity]

    def samples(self, shard: Shard) -> list[Sample]:
        """Every planned sample of a shard, in key order (identity, then target order)."""
        targets = self.shard_targets(shard)
        return [Sample(f"{i:07d}_{t.key}", i, self.seed_of(i), t, shard.split)
                for i in shard.identities for t in targets]

    def select(self, spec: str | None) -> list[Shard]:
        """Base shards named by a spec like `0-3,7`; all base shards when spec is None."""
        base = self.shards[:self.base_shards]
        if spec is None:
            return list(base)
        chosen: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"bad shard range {part.strip()!r}; use e.g. 0-3,7")
            lo_i, hi_i = int(lo), int(hi) if hi else int(lo)
            if hi_i < lo_i:
                raise ValueError(f"shard range {part.strip()!r} runs backwards; write it low-high, e.g. {hi_i}-{lo_i}")
            if hi_i >= len(base):
                raise ValueError(f"shard range {part.strip()!r} is outside 0-{len(base) - 1}")
            chosen.update(range(lo_i, hi_i + 1))
        return [base[i] for i in sorted(chosen)]


def _check_splits(recipe: Recipe, fractions: dict, count: int, per_shard: int, n_shards: int, n_targets: int) -> None:
    """Every split with a share needs a shard of its own (splits are whole shards, so identity-disjoint)."""
    wanted = [name for name in SPLITS if fractions[name] > 0]
    if n_shards >= len(wanted):
        return
    k = len(wanted)
    # the most identities per shard that still make k shards: ceil(count / p) >= k  <=>  p < count / (k - 1)
    largest = min(per_shard, -(-count // (k - 1)) - 1) if count >= k else 0
    fix = (f"use identities.count >= {(k - 1) * per_shard + 1}" +
           (f" or output.samples_per_shard <= {largest * n_targets}" if largest else ""))
    raise UsageError(f"output.splits: {', '.join(wanted)} need a shard each, but {count} identities make "
                     f"{n_shards} shard{'s' if n_shards != 1 else ''} of up to {per_shard} identities "
                     f"(output.samples_per_shard {recipe.output.samples_per_shard} / {n_targets} targets); {fix}")


def _check_quota_reachable(plan: "Plan") -> None:
    """A quota unit whose every target lies in a skip band is never rendered, so no number of
    top-up identities can fill it: say so before any image is made."""
    recipe = plan.recipe
    if recipe.targets.quota is None:
        return
    from synthfer.quota import quotas   # quota.py builds on Plan

    decider = Decider(recipe.filters)
    what = "class" if recipe.targets.classes is not None else "target"
    by_unit: dict[str, list] = {}
    for t in plan.targets:
        if unit := plan.unit_of(t):
            by_unit.setdefault(unit, []).append(decider.band_of(t))
    for unit, bands in by_unit.items():
        if all(b is not None and b.action == "skip" for b in bands):
            raise UsageError(f"targets.quota: {what} {unit!r} can never be met: every target of it lies in a skip "
                             f"band of filters.failure_bands ({bands[0].from_deg:g}-{bands[0].to_deg:g} deg); drop "
                             f"the {what}, or give the band action reject or verify")
    # Even if every image were accepted: an identity belongs to one split and gives a unit at most
    # one image per rendered target of it, and a split keeps the identities the plan gave it.
    rendered = {u: sum(b is None or b.action != "skip" for b in bands) for u, bands in by_unit.items()}
    need = dict.fromkeys(SPLITS, 0)
    for (unit, split), n in quotas(plan).items():
        need[split] = max(need[split], -(-n // rendered[unit]))
    total = sum(max(n, need[s]) for s, n in plan.identities_by_split().items())
    cap = recipe.identities.cap
    if total > cap:
        limit = (f"identities.max_count {cap}" if recipe.identities.max_count is not None
                 else f"identities.max_count (default 10 x identities.count = {cap})")
        raise UsageError(f"targets.quota: {recipe.targets.quota} per {what} cannot be met within {limit}: even if "
                         f"every image were accepted it takes {total} identities; raise identities.max_count or lower "
                         f"the quota")


# Rough bytes per pixel of an encoded RGB image, for the size estimate only (faces; the builtin
# stand-in's noisy images compress worse).
_BYTES_PER_PIXEL = {"png": 1.8, "jpg": 0.45, "webp": 0.3}
_TAR_OVERHEAD = 2 * 1024 + 400  # two headers with padding plus the json label


def estimated_bytes(plan: Plan) -> int:
    """Bytes of the output if every planned sample were kept (before any filter)."""
    img = plan.recipe.output.image
    per_sample = img.size * img.size * _BYTES_PER_PIXEL[img.format] + _TAR_OVERHEAD
    return int(per_sample * plan.total_samples)
