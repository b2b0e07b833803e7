"""What a person sees: a progress bar on a terminal, plain log lines otherwise, and summary tables."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from synthfer.plan import SPLITS, Plan


class _Bar:
    """rich progress over samples, with shard count and images/s."""

    def __init__(self):
        self.progress = Progress(
            TextColumn("[bold]building"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
            TextColumn("{task.fields[shards]}"), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=Console(stderr=True), transient=False)

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

    def committed(self, shard, marker):
        self.done_shards += 1
        self.new_samples += marker["rows"]
        rate = self.new_samples / max(time.perf_counter() - self.t0, 1e-9)
        self.progress.update(self.task, advance=marker["rows"], shards=self._shards(), rate=f"{rate:.1f} img/s")

    def finished(self):
        self.progress.stop()


class _Lines:
    """One line per committed shard, for logs and cron mail."""

    def started(self, shards, samples, already_done):
        self.total, self.done, self.t0 = shards, already_done, time.perf_counter()
        self.samples = 0
        print(f"synthfer: building {shards - already_done} of {shards} shards ({samples} samples planned in them)",
              file=sys.stderr, flush=True)

    def committed(self, shard, marker):
        self.done += 1
        self.samples += marker["rows"]
        rate = self.samples / max(time.perf_counter() - self.t0, 1e-9)
        print(f"synthfer: committed {shard.name} ({shard.split}, {marker['rows']} samples) "
              f"[{self.done}/{self.total}] {rate:.1f} img/s", file=sys.stderr, flush=True)

    def finished(self):
        pass


class Quiet:
    def started(self, shards, samples, already_done): pass
    def committed(self, shard, marker): pass
    def finished(self): pass


def make_reporter(quiet: bool):
    if quiet:
        return Quiet()
    return _Bar() if sys.stderr.isatty() else _Lines()


def summary_table(result) -> Table:
    t = Table(title=f"synthfer build -> {result.out_dir}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("planned samples", str(result.planned_samples))
    t.add_row("shards committed (this run)", f"{result.committed_shards}/{result.planned_shards} ({result.built_shards})")
    t.add_row("manifest rows", str(result.rows))
    for status, n in sorted(result.by_status.items()):
        t.add_row(f"  {status}", str(n))
    for split in SPLITS:
        if split in result.by_split:
            t.add_row(f"  split {split}", str(result.by_split[split]))
    for reason, n in sorted(result.by_reason.items()):
        t.add_row(f"  reason {reason}", str(n))
    for band, counts in result.by_band.items():
        t.add_row(f"  band {band}", _acceptance(counts))
    targets = sorted(result.by_target.items())
    shown = targets if len(targets) <= 12 else targets[:6] + [("...", None)] + targets[-5:]
    for target, counts in shown:
        t.add_row(f"  target {target}", _acceptance(counts) if counts else "")
    t.add_row("wall time", f"{result.wall_s:.1f} s")
    t.add_row("images/s (this run)", f"{result.images_per_s:.1f}")
    t.add_row("complete", "yes" if result.complete else "no: run the same command again to finish")
    return t


def _acceptance(counts: dict) -> str:
    total = sum(counts.values())
    made = total - counts.get("skipped", 0)
    text = f"{counts.get('accepted', 0)}/{total} accepted"
    if counts.get("skipped"):
        text += f", {counts['skipped']} skipped"
    if made == 0:
        return text
    share = f"{100 * counts.get('accepted', 0) / made:.0f}%"
    return text + (f" ({share} of generated)" if counts.get("skipped") else f" ({share})")


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
