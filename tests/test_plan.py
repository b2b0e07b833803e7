from hypothesis import given, settings, strategies as st

from synthfer.plan import Plan, identity_seed, split_sequence
from synthfer.recipe import Recipe


def _recipe(**kw):
    base = {"identities": {"count": 25}, "targets": {"emotions": ["happy", "at ease"], "intensities": [0.33, 1.0],
                                                   "points": [[0.5, -0.25]]},
            "output": {"samples_per_shard": 12}}
    base.update(kw)
    return Recipe.model_validate(base)


def test_keys_follow_the_design_format():
    plan = Plan(_recipe())
    keys = [s.key for s in plan.samples(plan.shards[0])]
    assert keys[:6] == ["0000000_neutral", "0000000_happy-033", "0000000_happy-100", "0000000_at-ease-033",
                        "0000000_at-ease-100", "0000000_va-p050-m025"]
    every = [s.key for sh in plan.shards for s in plan.samples(sh)]
    assert len(every) == len(set(every)) == plan.total_samples == 25 * 6
    assert all("." not in k for k in every)


def test_shards_hold_whole_identities_and_splits_are_identity_disjoint():
    plan = Plan(_recipe())
    assert plan.identities_per_shard == 2 and len(plan.shards) == 13
    seen = {}
    for shard in plan.shards:
        for s in plan.samples(shard):
            assert seen.setdefault(s.identity, s.split) == s.split
    assert sorted(seen) == list(range(25))


def test_growing_the_count_keeps_old_shards():
    small, big = Plan(_recipe()), Plan(_recipe(identities={"count": 60}))
    for a, b in zip(small.shards[:-1], big.shards):  # the last small shard may be partial
        assert a == b and small.samples(a) == big.samples(b)


def test_identity_seeds_depend_on_recipe_seed_and_index_only():
    assert identity_seed(1, 5) == identity_seed(1, 5)
    assert len({identity_seed(1, i) for i in range(1000)} | {identity_seed(2, i) for i in range(1000)}) == 2000


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.floats(0, 1), st.floats(0, 1))
def test_split_sequence_tracks_fractions(n, a, b):
    total = a + b + 1
    fractions = {"train": 1 / total, "val": a / total, "test": b / total}
    seq = split_sequence(fractions, n)
    assert seq == split_sequence(fractions, n + 7)[:n]  # prefix-stable
    wanted = [name for name, f in fractions.items() if f > 0]
    for name, f in fractions.items():
        # one shard each first (never an empty split), then the largest deficit: within 2 shards
        assert abs(seq.count(name) - f * n) <= 2.0 + 1e-9
        if f == 0:
            assert name not in seq
        elif n >= len(wanted):
            assert name in seq


def test_select_ranges():
    plan = Plan(_recipe())
    assert [s.index for s in plan.select("0-2,5")] == [0, 1, 2, 5]
    for bad in ("3-1", "x", "0-99"):
        try:
            plan.select(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
