"""What a person sees: a progress bar on a terminal, plain log lines otherwise, and summary tables."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synthfer.plan import SPLITS, Plan


class Quiet:
    """Says nothing. The base of the other reporters: every event is a no-op here."""

    def started(self, shards, samples, already_done): pass
    def more(self, shards, samples): pass
    def note(self, message): pass
    def committed(self, shard, marker): pass
    def retried(self, shard, attempt, error): pass
    def failed(self, shard, error): pass
    def finished(self): pass


class _Bar(Quiet):
    """rich progress over samples, with shard count and images/s."""

    def __init__(self):
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
            TextColumn("{task.fields[shards]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False)

    def started(self, shards, samples, already_done):
        self.total_shards, self.done_shards = shards, already_done
        self.t0 = time.perf_counter()
        self.new_samples = 0
        self.task = self.progress.add_task("build", total=samples, shards=self._shards(), rate="")
        per_shard = samples / shards if shards else 0
        self.progress.update(self.task, completed=int(already_done * per_shard))
        self.progress.start()

    def _shards(self):
        return f"shards {self.done_shards}/{self.total_shards}"

    def more(self, shards, samples):
        self.total_shards += shards
        self.progress.update(self.task, total=self.progress.tasks[0].total + samples, shards=self._shards())

    def note(self, message):
        self.console.print(f"synthfer: {message}", markup=False, highlight=False)

    def committed(self, shard, marker):
        self.done_shards += 1
        self.new_samples += marker["rows"]
        rate = self.new_samples / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=marker["rows"], shards=self._shards(), rate=f"{rate:.1f} img/s")

    def retried(self, shard, attempt, error):
        self.note(f"{shard.name} failed (attempt {attempt}): {error}; retrying")

    def failed(self, shard, error):
        self.note(f"{shard.name} FAILED after retries: {error}")

    def finished(self):
        self.progress.stop()


class _Lines(Quiet):
    """One line per event on stderr, for logs and cron mail."""

    def _say(self, text):
        print(f"synthfer: {text}", file=sys.stderr, flush=True)

    def started(self, shards, samples, already_done):
        self.total, self.done, self.t0 = shards, already_done, time.perf_counter()
        self.samples = 0
        self._say(f"building {shards - already_done} of {shards} shards ({samples} samples planned in them)")

    def note(self, message):
        self._say(message)

    def more(self, shards, samples):
        self.total += shards

    def committed(self, shard, marker):
        self.done += 1
        self.samples += marker["rows"]
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        self._say(f"committed {shard.name} ({shard.split}, {marker['rows']} samples) "
                  f"[{self.done}/{self.total}] {rate:.1f} img/s")

    def retried(self, shard, attempt, error):
        self._say(f"{shard.name} failed (attempt {attempt}): {error}; retrying")

    def failed(self, shard, error):
        self._say(f"{shard.name} FAILED after retries: {error}")


class JsonLines(Quiet):
    """--log-format json: one JSON object per event on stdout, for log collectors."""

    def _emit(self, event, **fields):
        fields = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        print(json.dumps(fields, sort_keys=True), flush=True)

    def started(self, shards, samples, already_done):
        self._emit("started", shards=shards, samples=samples, already_committed=already_done)

    def note(self, message):
        self._emit("note", message=message)

    def more(self, shards, samples):
        self._emit("round", shards=shards, samples=samples)

    def committed(self, shard, marker):
        self._emit("shard_committed", shard=shard.name, split=shard.split, rows=marker["rows"],
                   accepted=marker.get("accepted"))

    def retried(self, shard, attempt, error):
        self._emit("shard_retried", shard=shard.name, attempt=attempt, error=error)

    def failed(self, shard, error):
        self._emit("shard_failed", shard=shard.name, error=error)

    def summary(self, result):
        self._emit("summary", out_dir=str(result.out_dir), planned_samples=result.planned_samples,
                   committed_shards=result.committed_shards, planned_shards=result.planned_shards,
                   built_shards=result.built_shards, rows=result.rows, complete=result.complete,
                   failed=result.failed, by_status=result.by_status, by_reason=result.by_reason,
                   by_split=result.by_split, by_class=result.by_class, quota_rounds=result.rounds,
                   quota_short={f"{u}/{s}": n for (u, s), n in sorted(result.short.items())},
                   warnings=result.warnings, wall_s=round(result.wall_s, 3),
                   images_per_s=round(result.images_per_s, 2))


def make_reporter(quiet: bool, log_format: str = "text"):
    if quiet:  # errors only, whatever the format
        return Quiet()
    if log_format == "json":
        return JsonLines()
    return _Bar() if sys.stderr.isatty() else _Lines()


SHOWN_UNITS = 12   # class/target rows in the end-of-run table; failing ones are always shown


def summary_tables(result) -> list[Table]:
    """The end-of-run tables: totals, then accepted per class (or target) x split, worst first."""
    t = Table(title=f"synthfer build -> {result.out_dir}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    rounds = f"; {result.rounds} quota top-up round{'s' if result.rounds != 1 else ''}" if result.rounds else ""
    t.add_row("planned samples", f"{result.planned_samples} ({result.identities} identities{rounds})")
    t.add_row("shards committed (this run)", f"{result.committed_shards}/{result.planned_shards} ({result.built_shards})")
    t.add_row("manifest rows", str(result.rows))
    rendered = sum(n for status, n in result.by_status.items() if status != "skipped")
    for status in ("accepted", "rejected", "skipped", "surplus"):
        n = result.by_status.get(status, 0)
        if status == "surplus" and not n:
            continue
        share = f" ({100 * n / rendered:.0f}% of rendered)" if status == "accepted" and rendered else ""
        t.add_row(f"  {status}", f"{n}{share}")
    for reason, n in sorted(result.by_reason.items()):
        t.add_row(f"  reason {reason}", str(n))
    for band, counts in result.by_band.items():
        t.add_row(f"  band {band}", _acceptance(counts))
    for band, g in (result.correction or {}).get("by_band", {}).items():
        per = "-" if g["renders_per_accepted"] is None else f"{g['renders_per_accepted']:.2f}"
        without = "-" if g["renders_per_accepted_without"] is None else f"{g['renders_per_accepted_without']:.2f}"
        t.add_row(f"  corrected {band}", f"{g['corrected']} of {g['samples']}; renders/accepted {per} "
                                         f"(without correction {without})")
    t.add_row("wall time", f"{result.wall_s:.1f} s")
    t.add_row("images rendered/s (this run)", f"{result.images_per_s:.1f}")
    if result.complete:
        done = "yes"
    elif result.short:
        done = "no: quotas not met (see the error below)"
    elif result.partial:
        done = "no: run it again without --shards to finish"
    else:
        done = "no: run the same command again to finish"
    t.add_row("complete", done)
    return [t, _units_table(result)]


def _units_table(result) -> Table:
    """Accepted per class (or target) and split, worst acceptance first; units below the warning
    threshold are never left out."""
    from synthfer.summary import WARN_BELOW

    rows = []
    for unit, splits in result.by_class.items():
        planned = sum(sum(c.values()) for c in splits.values())
        accepted = sum(c.get("accepted", 0) for c in splits.values())
        kept = accepted + sum(c.get("surplus", 0) for c in splits.values())
        rows.append((kept / planned if planned else 0.0, unit, splits, accepted, planned))
    rows.sort(key=lambda r: (r[0], r[1]))
    failing = [r for r in rows if r[0] < WARN_BELOW]
    shown = failing + [r for r in rows if r[0] >= WARN_BELOW][:max(0, SHOWN_UNITS - len(failing))]
    word = result.unit
    t = Table(title=f"accepted per {word} and split (worst first)")
    t.add_column(word)
    for split in SPLITS:
        t.add_column(split, justify="right")
    t.add_column("passed filters / planned", justify="right")
    for share, unit, splits, accepted, planned in shown:
        t.add_row(unit, *(str(splits.get(split, {}).get("accepted", 0)) for split in SPLITS),
                  f"{round(share * planned)}/{planned} ({100 * share:.0f}%)")
    if len(shown) < len(rows):
        rest = rows[len(shown):]
        t.add_row(f"... {len(rest)} more", "", "", "", f"each >= {100 * rest[0][0]:.0f}%")
    return t


def _acceptance(counts: dict) -> str:
    total = sum(counts.values())
    made = total - counts.get("skipped", 0)
    kept = counts.get("accepted", 0) + counts.get("surplus", 0)
    text = f"{kept}/{total} accepted"
    if counts.get("skipped"):
        text += f", {counts['skipped']} skipped"
    if made == 0:
        return text
    share = f"{100 * kept / made:.0f}%"
    return text + (f" ({share} of rendered)" if counts.get("skipped") else f" ({share})")


def plan_tables(plan: Plan, limit: int | None) -> list[Table]:
    shards = Table(title="Shards")
    for col in ("shard", "split", "identities", "samples"):
        shards.add_column(col, justify="left" if col in ("shard", "split") else "right")
    listed = plan.shards if limit is None else plan.shards[:limit]
    for s in listed:
        shards.add_row(s.name, s.split, f"{s.identities[0]}-{s.identities[-1]}", str(len(s.identities) * len(plan.targets)))
    if len(listed) < len(plan.shards):
        shards.add_row(f"... {len(plan.shards) - len(listed)} more", "", "", "")

    splits = Table(title="Splits (by identity)")
    for col in ("split", "shards", "identities", "samples"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for name in SPLITS:
        mine = [s for s in plan.shards if s.split == name]
        ids = sum(len(s.identities) for s in mine)
        splits.add_row(name, str(len(mine)), str(ids), str(ids * len(plan.targets)))

    targets = Table(title="Targets (per identity)")
    for col in ("target", "valence", "arousal", "angle", "intensity", "samples"):
        targets.add_column(col, justify="left" if col == "target" else "right")
    n = plan.recipe.identities.count
    for t in plan.targets:
        angle = "-" if t.angle_deg is None else f"{t.angle_deg:.1f}"
        targets.add_row(t.key, f"{t.valence:+.3f}", f"{t.arousal:+.3f}", angle, f"{t.intensity:.2f}", str(n))
    return [shards, splits, targets]
