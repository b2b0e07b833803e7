"""The shards a build runs, round by round: the base shards, then quota top-up rounds until every
quota is met or identities.max_count is reached, then the surplus over each quota.

What is already in the output is judged once (`Committed`): a shard whose files or generation
fingerprint do not match is retracted; one whose composition, decisions (filters,
keep_rejected) or surplus differ from what is planned now is handed to the worker again, which
re-decides it from its stored scores and reuses its images. The manifest is removed before the
first shard that is already committed changes, so it never lists rows whose files are gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synthfer import quota
from synthfer.errors import first_line
from synthfer.filters import decisions_digest, surplus_digest
from synthfer.io.manifest import read_part
from synthfer.io.shards import ShardStore, shard_name
from synthfer.plan import Plan, Shard
from synthfer.worker import Job

_COLUMNS = ["key", "target", "split", "status"]


class Committed:
    """The committed shards of an output, as far as this build may keep or reuse them."""

    def __init__(self, store: ShardStore, fingerprint: str, trust_markers: bool, reporter):
        self.store, self.fingerprint, self.reporter = store, fingerprint, reporter
        self.manifest_removed = False
        self.markers: dict[int, dict] = {}
        bad = []
        indices = store.marker_indices()
        if indices:
            reporter.note(f"checking {len(indices)} committed shard{'s' if len(indices) != 1 else ''} "
                          f"({'sizes' if trust_markers else 'sha256'}) ...")
        for index in indices:
            try:
                marker = store.read_marker(index)
                problem = store.problem(index, marker, hashes=not trust_markers)
            except (OSError, ValueError) as err:
                marker, problem = {}, f"unreadable marker ({first_line(err)})"
            if problem is None and marker.get("fingerprint") != fingerprint:
                problem = "built with another recipe fingerprint"
            if problem is None:
                self.markers[index] = marker
            else:
                bad.append((index, problem))
        for index, problem in bad:
            self.retract(index, f"{problem}: rebuilding it")

    def before_change(self) -> None:
        """The manifest goes before any committed shard changes (once per build)."""
        if not self.manifest_removed:
            self.store.folder.remove(self.store.layout.manifest)
            self.manifest_removed = True

    def retract(self, index: int, why: str) -> None:
        self.before_change()
        self.reporter.note(f"{shard_name(index)}: {why}")
        self.store.retract(index)
        self.markers.pop(index, None)

    def jobs(self, plan: Plan, shards: list[Shard], surplus: dict[int, frozenset] | None = None) -> list[Job]:
        """Jobs for the shards whose committed version (if any) is not what is planned now.
        surplus: the keys over the quota per shard (the last pass); None while rounds run, when a
        shard's surplus marks do not matter (they count as accepted)."""
        decisions = decisions_digest(plan.recipe)
        out = []
        for shard in shards:
            extra = (surplus or {}).get(shard.index, frozenset())
            marker = self.markers.get(shard.index)
            if marker is not None:
                if marker.get("composition") != plan.composition(shard):
                    self.retract(shard.index, "planned differently now: rebuilding it")
                elif marker.get("decisions") == decisions and (
                        surplus is None or marker.get("surplus", "") == surplus_digest(extra)):
                    continue  # committed as planned
                else:
                    self.before_change()   # re-decided in place from its stored scores
            out.append(Job(shard, extra))
        return out

    def holds(self, plan: Plan, shard: Shard) -> bool:
        """The shard is committed with the composition planned for it now."""
        marker = self.markers.get(shard.index)
        return marker is not None and marker.get("composition") == plan.composition(shard)

    def update(self, committed: dict[int, dict]) -> None:
        self.markers.update(committed)

    def retract_unplanned(self, plan: Plan) -> None:
        planned = {s.index for s in plan.shards}
        for index in sorted(set(self.markers) - planned):
            self.retract(index, "no longer in the plan (fewer quota top-ups): removed")

    def rows(self, plan: Plan, shards: list[Shard]):
        """(key, target, split, status) of every committed row of `shards`, in plan order."""
        for shard in shards:
            if shard.index in self.markers:
                table = read_part(self.store.folder, self.store.layout.part(shard.index))
                yield from zip(*(table.column(c).to_pylist() for c in _COLUMNS))


@dataclass
class Outcome:
    failed: dict = field(default_factory=dict)      # shard name -> last error
    built: int = 0                                  # shards committed by this run
    rounds: int = 0                                 # quota top-up rounds planned
    rendered: int = 0                               # samples rendered by this run (for images/s)
    short: dict = field(default_factory=dict)       # (unit, split) -> accepted images still missing
    partial: bool = False                           # --shards


def run_rounds(plan: Plan, committed: Committed, selected: list[Shard], run, partial: bool, reporter) -> Outcome:
    """run(jobs) -> (failed, {index: marker}) builds jobs; partial: --shards (no top-up, no surplus)."""
    outcome = Outcome(partial=partial)

    def execute(jobs: list[Job]) -> bool:
        if not jobs:
            return True
        failed, markers = run(jobs)
        committed.update(markers)
        outcome.failed.update(failed)
        outcome.built += len(markers)
        outcome.rendered += sum(m.get("rendered", 0) for m in markers.values())
        return not failed

    jobs = committed.jobs(plan, selected)
    reporter.started(len(selected), sum(plan.shard_rows(s) for s in selected), len(selected) - len(jobs))
    ok = execute(jobs)
    wanted = quota.quotas(plan)
    if not ok or partial:
        _replay(plan, committed, wanted, outcome)
        return outcome
    while wanted:
        tally = quota.tally(plan, ((t, s, st) for _, t, s, st in committed.rows(plan, plan.shards)))
        shards = quota.next_round(plan, wanted, tally, outcome.rounds + 1)
        if not shards:
            break
        outcome.rounds += 1
        plan.add_round(shards)
        reporter.note(f"quota top-up round {outcome.rounds}: {_describe_round(plan, wanted, tally, shards)}")
        reporter.more(len(shards), sum(plan.shard_rows(s) for s in shards))
        if not execute(committed.jobs(plan, shards)):
            return outcome
    committed.retract_unplanned(plan)
    if wanted:
        extra = quota.surplus(plan, wanted, committed.rows(plan, plan.shards))
        by_shard: dict[int, set] = {}
        for shard in plan.shards:
            keys = {s.key for s in plan.samples(shard)} & extra
            if keys:
                by_shard[shard.index] = frozenset(keys)
        jobs = committed.jobs(plan, plan.shards, by_shard)
        if jobs:   # stored scores only: no image is rendered, but each shard is committed again
            reporter.note(f"surplus over the quotas: {_shards(len(jobs))} re-decided from their stored scores")
            reporter.more(len(jobs), 0)
        if not execute(jobs):
            return outcome
        final = quota.tally(plan, ((t, s, st) for _, t, s, st in committed.rows(plan, plan.shards)))
        outcome.short = quota.deficits(wanted, final)
    return outcome


def _replay(plan: Plan, committed: Committed, wanted: dict, outcome: Outcome) -> None:
    """A run that builds no top-ups (--shards, or a base shard failed) still plans the rounds an
    earlier run committed, as long as each is committed as planned now, so the manifest keeps
    listing them; nothing is built or removed (the next full run settles the rest)."""
    while wanted:
        tally = quota.tally(plan, ((t, s, st) for _, t, s, st in committed.rows(plan, plan.shards)))
        shards = quota.next_round(plan, wanted, tally, outcome.rounds + 1)
        if not shards or not all(committed.holds(plan, shard) for shard in shards):
            return
        outcome.rounds += 1
        plan.add_round(shards)


def _shards(n: int) -> str:
    return f"{n} shard{'s' if n != 1 else ''}"


def _describe_round(plan: Plan, wanted: dict, tally, shards: list[Shard]) -> str:
    short = quota.deficits(wanted, tally)
    by_split: dict[str, list[str]] = {}
    for (unit, split), n in sorted(short.items()):
        by_split.setdefault(split, []).append(f"{unit or '(none)'} {n}")
    ids = sum(len(s.identities) for s in shards)
    return (f"{ids} new identities in {_shards(len(shards))} for what is short ("
            + "; ".join(f"{split}: {', '.join(items)}" for split, items in by_split.items()) + ")")
