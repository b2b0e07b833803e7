"""Recipe -> targets, identities, sample keys, shards and splits. Pure: no models, no files.

Prefix stability is the design rule here: shard s always holds identities [s*n, (s+1)*n) and its
split depends only on s, so growing identities.count appends shards without touching old ones,
and any subset of shards can be built in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from synthfer import circumplex
from synthfer.recipe import Recipe, point_key

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Target:
    key: str                  # neutral | happy-100 | at-ease-033 | va-p050-m025
    emotion: str | None       # named direction, None for neutral and raw points
    valence: float
    arousal: float
    angle_deg: float | None   # None at the origin (neutral)
    intensity: float

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

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


def targets_of(recipe: Recipe) -> list[Target]:
    """Neutral first, then each emotion at each intensity, then raw points: the key order in a shard."""
    out = []
    if recipe.targets.neutral:
        out.append(Target("neutral", None, 0.0, 0.0, None, 0.0))
    for emotion in recipe.targets.emotion_list():
        for s in recipe.targets.intensities:
            v, a = circumplex.va_from_polar(emotion.angle_deg, s)
            out.append(Target(f"{emotion.name}-{round(s * 100):03d}", emotion.name, v, a, emotion.angle_deg, s))
    for v, a in recipe.targets.points:
        angle, s = circumplex.polar_from_va(v, a)
        out.append(Target(point_key(v, a), None, v, a, angle, s))
    return out


def identity_seed(recipe_seed: int, identity: int) -> int:
    """Identity i's own 63-bit seed: independent streams, no shared state, no birthday collisions to speak of."""
    state = np.random.SeedSequence([recipe_seed, identity]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


def split_sequence(fractions: dict[str, float], n: int) -> list[str]:
    """Split of shards 0..n-1: each next shard goes to the split furthest behind its share.

    Every prefix tracks the fractions within one shard per split, and shard s's split never
    depends on how many shards follow it.
    """
    counts = dict.fromkeys(SPLITS, 0)
    out = []
    for s in range(n):
        best = max((fractions[name] * (s + 1) - counts[name], -i, name)
                   for i, name in enumerate(SPLITS) if fractions[name] > 0)[2]
        counts[best] += 1
        out.append(best)
    return out


class Plan:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.targets = targets_of(recipe)
        per_shard = max(1, round(recipe.output.samples_per_shard / len(self.targets)))
        count = recipe.identities.count
        n_shards = -(-count // per_shard)
        splits = split_sequence(recipe.output.splits.model_dump(), n_shards)
        self.shards = [
            Shard(s, tuple(range(s * per_shard, min(count, (s + 1) * per_shard))), splits[s])
            for s in range(n_shards)
        ]
        self._seeds: dict[int, int] = {}

    @property
    def identities_per_shard(self) -> int:
        return len(self.shards[0].identities)

    @property
    def total_samples(self) -> int:
        return self.recipe.identities.count * len(self.targets)

    def seed_of(self, identity: int) -> int:
        if identity not in self._seeds:
            self._seeds[identity] = identity_seed(self.recipe.seed, identity)
        return self._seeds[identity]

    def samples(self, shard: Shard) -> list[Sample]:
        """Every planned sample of a shard, in key order (identity, then target order)."""
        return [
            Sample(f"{i:07d}_{t.key}", i, self.seed_of(i), t, shard.split)
            for i in shard.identities for t in self.targets
        ]

    def select(self, spec: str | None) -> list[Shard]:
        """Shards named by a spec like `0-3,7`; all when spec is None."""
        if spec is None:
            return list(self.shards)
        chosen: set[int] = set()
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            if not lo.isdigit() or (hi and not hi.isdigit()):
                raise ValueError(f"bad shard range {part.strip()!r}; use e.g. 0-3,7")
            lo_i, hi_i = int(lo), int(hi) if hi else int(lo)
            if hi_i < lo_i or hi_i >= len(self.shards):
                raise ValueError(f"shard range {part.strip()!r} is outside 0-{len(self.shards) - 1}")
            chosen.update(range(lo_i, hi_i + 1))
        return [self.shards[i] for i in sorted(chosen)]


# Rough bytes per pixel of an encoded RGB image, for the size estimate only (faces; the builtin
# stand-in's noisy images compress worse).
_BYTES_PER_PIXEL = {"png": 1.8, "jpg": 0.45, "webp": 0.3}
_TAR_OVERHEAD = 2 * 1024 + 400  # two headers with padding plus the json label


def estimated_bytes(plan: Plan) -> int:
    img = plan.recipe.output.image
    per_sample = img.size * img.size * _BYTES_PER_PIXEL[img.format] + _TAR_OVERHEAD
    return int(per_sample * plan.total_samples)
