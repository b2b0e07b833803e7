"""What a person sees: a progress bar on a terminal, plain log lines otherwise, and summary tables."""

from __future__ import annotations

import json
import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synthfer.plan import SPLITS, Plan


PROGRESS_EVERY_S = 5.0   # plain-log and JSON progress events: the first batch, then at most this often
RATE_WINDOW_S = 30.0     # the rate (and so the ETA) is measured over this recent window


class Quiet:
    """Says nothing. The base of the other reporters: every event is a no-op here."""

    def started(self, shards, samples, already_done): pass
    def more(self, shards, samples): pass
    def note(self, message): pass
    def rendered(self, shard, samples): pass   # a batch of a shard's samples was generated (local builds)
    def committed(self, shard, marker): pass
    def retried(self, shard, attempt, error): pass
    def failed(self, shard, error): pass
    def finished(self): pass


def start_line(shards: int, samples: int, already_done: int) -> str:
    """What a build says before its first batch: fresh, resumed, or nothing left to do."""
    if shards and already_done == shards:
        return f"nothing to build: all {shards} shards are already committed and verified"
    if already_done:
        return (f"resuming: {already_done} of {shards} shards already committed and verified; building "
                f"{shards - already_done} ({samples} samples planned in all {shards})")
    return f"building {shards} shards ({samples} samples planned in them)"


class _Counter:
    """Samples done this run (per batch, corrected at each commit) and a rate over a recent window."""

    def __init__(self, total: int, done: int):
        self.total, self.done = total, done
        self.per_shard: dict[int, int] = {}
        self.window: list[tuple[float, int]] = [(time.perf_counter(), done)]

    def batch(self, shard, samples: int) -> None:
        self.per_shard[shard.index] = self.per_shard.get(shard.index, 0) + samples
        self._add(samples)

    def grow(self, samples: int) -> None:
        self.total += samples

    def retry(self, shard) -> int:
        """A shard that failed starts again: its batches so far no longer count. Returns them."""
        undone = self.per_shard.pop(shard.index, 0)
        self.done -= undone
        return undone

    def commit(self, shard, rows: int) -> int:
        """Advance to the shard's full row count; returns how much that added."""
        extra = rows - self.per_shard.pop(shard.index, 0)
        self._add(extra)
        return extra

    def _add(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        self.window.append((now, self.done))
        while len(self.window) > 2 and now - self.window[1][0] > RATE_WINDOW_S:
            self.window.pop(0)

    def rate(self) -> float:
        (t0, d0), (t1, d1) = self.window[0], self.window[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta_s(self) -> float | None:
        rate = self.rate()
        return max(self.total - self.done, 0) / rate if rate > 0 else None


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
        if already_done:
            self.note(start_line(shards, samples, already_done))
        per_shard = samples / shards if shards else 0
        self.counter = _Counter(samples, int(already_done * per_shard))
        self.task = self.progress.add_task("build", total=samples, shards=self._shards(), rate="")
        self.progress.update(self.task, completed=self.counter.done)
        self.progress.start()

    def rendered(self, shard, samples):
        self.counter.batch(shard, samples)
        self.progress.update(self.task, advance=samples, rate=f"{self.counter.rate():.1f} img/s")

    def _shards(self):
        return f"shards {self.done_shards}/{self.total_shards}"

    def more(self, shards, samples):
        self.total_shards += shards
        self.counter.grow(samples)
        self.progress.update(self.task, total=self.counter.total, shards=self._shards())

    def note(self, message):
        self.console.print(f"synthfer: {message}", markup=False, highlight=False)

    def committed(self, shard, marker):
        self.done_shards += 1
        extra = self.counter.commit(shard, marker["rows"])
        self.progress.update(self.task, advance=extra, shards=self._shards(), rate=f"{self.counter.rate():.1f} img/s")

    def retried(self, shard, attempt, error):
        self.counter.retry(shard)
        self.progress.update(self.task, completed=self.counter.done)
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
        self.total, self.done = shards, already_done
        self.counter = _Counter(samples, int(already_done * samples / shards) if shards else 0)
        self.last = None
        self._say(start_line(shards, samples, already_done))

    def rendered(self, shard, samples):
        self.counter.batch(shard, samples)
        now = time.perf_counter()
        if self.last is None or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            self._progress()

    def _progress(self):
        eta = self.counter.eta_s()
        self._say(f"progress {self.counter.done}/{self.counter.total} samples, {self.counter.rate():.1f} img/s, "
                  f"ETA {'-' if eta is None else _clock(eta)}")

    def note(self, message):
        self._say(message)

    def more(self, shards, samples):
        self.total += shards
        self.counter.grow(samples)

    def committed(self, shard, marker):
        self.done += 1
        self.counter.commit(shard, marker["rows"])
        self._say(f"committed {shard.name} ({shard.split}, {marker['rows']} samples) "
                  f"[{self.done}/{self.total}] {self.counter.rate():.1f} img/s")

    def retried(self, shard, attempt, error):
        self.counter.retry(shard)
        self._say(f"{shard.name} failed (attempt {attempt}): {error}; retrying")

    def failed(self, shard, error):
        self._say(f"{shard.name} FAILED after retries: {error}")


class JsonLines(Quiet):
    """--log-format json: one JSON object per event on stdout, for log collectors."""

    def _emit(self, event, **fields):
        fields = {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        print(json.dumps(fields, sort_keys=True), flush=True)

    def started(self, shards, samples, already_done):
        self.counter = _Counter(samples, int(already_done * samples / shards) if shards else 0)
        self.last = None
        self._emit("started", shards=shards, samples=samples, already_committed=already_done,
                   message=start_line(shards, samples, already_done))

    def rendered(self, shard, samples):
        self.counter.batch(shard, samples)
        now = time.perf_counter()
        if self.last is None or now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            eta = self.counter.eta_s()
            self._emit("progress", samples_done=self.counter.done, samples_total=self.counter.total,
                       images_per_s=round(self.counter.rate(), 2), eta_s=None if eta is None else round(eta, 1))

    def note(self, message):
        self._emit("note", message=message)

    def more(self, shards, samples):
        self.counter.grow(samples)
        self._emit("round", shards=shards, samples=samples)

    def committed(self, shard, marker):
        self.counter.commit(shard, marker["rows"])
        self._emit("shard_committed", shard=shard.name, split=shard.split, rows=marker["rows"],
                   accepted=marker.get("accepted"))

    def retried(self, shard, attempt, error):
        self.counter.retry(shard)
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


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def make_reporter(quiet: bool, log_format: str = "text"):
    if quiet:  # errors and warnings only, whatever the format
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
