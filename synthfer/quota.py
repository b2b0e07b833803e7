"""Quotas: accepted images per class (per target without classes) and split, the top-up rounds of
new identities that render only what is still short, and the surplus over a quota.

Everything here is a function of committed rows, so rounds, their shards and the surplus are
the same however a build was interrupted, resumed or scheduled. The quota is split over the
splits by output.splits (largest remainder, so the parts add up); a top-up round plans, per
split still short, enough identities for the shortest unit at its measured acceptance
(Laplace-smoothed, so a unit with no acceptance yet still gets identities), up to
identities.max_count in all. Surplus: in plan order (shard, then identity, then target), the
first `quota` accepted samples of a unit and split stay accepted, later ones become `surplus`
and stay out of the training shards, so the accepted set is balanced exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from synthfer.plan import SPLITS, Plan, Shard, identities_per_shard

ACCEPTED_LIKE = ("accepted", "surplus")   # accepted by the filters (surplus only over a quota)


def quotas(plan: Plan) -> dict[tuple[str, str], int]:
    """(unit, split) -> accepted images wanted; {} without targets.quota."""
    quota = plan.recipe.targets.quota
    if quota is None:
        return {}
    fractions = {s: f for s, f in plan.recipe.output.splits.model_dump().items() if f > 0}
    raw = {s: quota * f for s, f in fractions.items()}
    share = {s: int(math.floor(v)) for s, v in raw.items()}
    for s in sorted(raw, key=lambda s: (share[s] - raw[s], SPLITS.index(s)))[:quota - sum(share.values())]:
        share[s] += 1
    units = dict.fromkeys(u for t in plan.targets if (u := plan.unit_of(t)))
    return {(u, s): n for u in units for s, n in share.items()}


@dataclass
class Tally:
    """Accepted (incl. surplus) per (unit, split) and rendered per unit, over committed rows."""
    accepted: Counter = field(default_factory=Counter)
    rendered: Counter = field(default_factory=Counter)
    accepted_by_unit: Counter = field(default_factory=Counter)

    def add(self, unit: str, split: str, status: str) -> None:
        if status == "skipped" or not unit:
            return
        self.rendered[unit] += 1
        if status in ACCEPTED_LIKE:
            self.accepted[(unit, split)] += 1
            self.accepted_by_unit[unit] += 1


def tally(plan: Plan, rows) -> Tally:
    """rows: (target key, split, status) of every committed sample."""
    t = Tally()
    for key, split, status in rows:
        target = plan.target_by_key.get(key)
        if target is not None:
            t.add(plan.unit_of(target), split, status)
    return t


def deficits(wanted: dict, t: Tally) -> dict[tuple[str, str], int]:
    return {k: n - t.accepted[k] for k, n in wanted.items() if n > t.accepted[k]}


def next_round(plan: Plan, wanted: dict, t: Tally, round_no: int) -> list[Shard]:
    """The shards of the next top-up round, [] when nothing is short or no identity is left."""
    short = deficits(wanted, t)
    budget = plan.recipe.identities.cap - plan.next_identity
    shards: list[Shard] = []
    next_id, index = plan.next_identity, len(plan.shards)
    for split in SPLITS:
        units = {u: n for (u, s), n in short.items() if s == split}
        if not units or budget <= 0:
            continue
        targets = [tg for tg in plan.targets if plan.unit_of(tg) in units]
        per_identity = Counter(plan.unit_of(tg) for tg in targets)
        need = max(math.ceil(n / (per_identity[u] * _rate(t, u))) for u, n in units.items())
        n = min(need, budget)
        per_shard = identities_per_shard(plan.recipe.output.samples_per_shard, len(targets))
        keys = tuple(tg.key for tg in targets)
        for start in range(next_id, next_id + n, per_shard):
            shards.append(Shard(index, tuple(range(start, min(start + per_shard, next_id + n))), split,
                                round_no, keys))
            index += 1
        next_id += n
        budget -= n
    return shards


def _rate(t: Tally, unit: str) -> float:
    """Acceptance of a unit so far, Laplace-smoothed: never 0, never 1 from one sample."""
    return (t.accepted_by_unit[unit] + 1) / (t.rendered[unit] + 2)


def surplus(plan: Plan, wanted: dict, rows) -> set[str]:
    """Keys over the quota. rows: (key, target key, split, status) in plan order."""
    kept: Counter = Counter()
    out = set()
    for key, target_key, split, status in rows:
        if status not in ACCEPTED_LIKE:
            continue
        unit = plan.unit_of(plan.target_by_key[target_key])
        if (unit, split) not in wanted:
            continue
        if kept[(unit, split)] < wanted[(unit, split)]:
            kept[(unit, split)] += 1
        else:
            out.add(key)
    return out


def estimate_identities(plan: Plan, wanted: dict, t: Tally) -> int:
    """Identities a fresh build would need for every quota at the acceptance measured so far
    (t from an existing output): the largest need over units and splits."""
    fractions = plan.recipe.output.splits.model_dump()
    per_identity = Counter(plan.unit_of(tg) for tg in plan.targets)
    need = 0
    for (u, split), n in wanted.items():
        if per_identity[u] and fractions[split] > 0:
            need = max(need, math.ceil(n / (per_identity[u] * _rate(t, u) * fractions[split])))
    return need


def short_text(short: dict) -> str:
    """`disgust: 12 short in train, 3 in val; contempt: ...` for messages."""
    by_unit: dict[str, list[str]] = {}
    for (unit, split), n in sorted(short.items(), key=lambda kv: (kv[0][0], SPLITS.index(kv[0][1]))):
        by_unit.setdefault(unit, []).append(f"{n} in {split}")
    return "; ".join(f"{unit}: short by {', '.join(parts)}" for unit, parts in by_unit.items())
