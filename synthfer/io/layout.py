"""Where each kind of file sits inside an output folder, per format version.

Every relative name an output holds is made here, so a change of layout (format version 2's
split-named shards) touches this module only. Names are relative POSIX paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Layout:
    version: int

    # ---------------------------------------------------------------- per shard
    def tar(self, index: int, split: str) -> str:
        """Accepted samples of shard `index` (WebDataset tar)."""
        return f"shards/shard-{index:06d}.tar"

    def rejected_tar(self, index: int, split: str) -> str:
        """Rejected samples kept with output.keep_rejected."""
        return f"shards/rejected-{index:06d}.tar"

    def part(self, index: int) -> str:
        """The shard's manifest rows (Parquet)."""
        return f"parts/shard-{index:06d}.parquet"

    def marker(self, index: int) -> str:
        """The commit marker: written last, lists the shard's files with sizes and sha256s."""
        return f"parts/shard-{index:06d}.done.json"

    def marker_index(self, name: str) -> int | None:
        """Shard index of a file name in `marker_dir`, when it is a marker."""
        m = re.fullmatch(r"shard-(\d{6,})\.done\.json", name)
        return int(m.group(1)) if m else None

    marker_dir = "parts"

    # ---------------------------------------------------------------- whole output
    manifest = "manifest.parquet"
    classes = "classes.json"
    run_json = "run.json"
    fingerprint = "fingerprint.json"
    lock = ".lock"
    report_dir = "report"

    def lease(self, generation: int) -> str:
        return f".lease-{generation:06d}.json"

    def lease_generation(self, name: str) -> int | None:
        m = re.fullmatch(r"\.lease-(\d{6,})\.json", name)
        return int(m.group(1)) if m else None

    lease_dir = ""

    # Folders whose files synthfer writes (temporaries are looked for here) and those holding
    # shard files (unmarked ones are garbage).
    data_dirs = ("", "shards", "parts", "report")
    shard_dirs = ("shards", "parts")

    # Files `synthfer report` writes into report_dir (sheet-*.png besides these).
    report_files = ("metrics.csv", "metrics.md", "compare.csv", "compare.md", "report.html", "circumplex.png",
                    "direction_error.png", "acceptance.png", "scores.png")

    def is_report_file(self, name: str) -> bool:
        return name in self.report_files or bool(re.fullmatch(r"sheet-[\w-]+\.png", name))

    def is_temporary(self, name: str) -> bool:
        """A temporary synthfer writes (`.NAME.tmp-TOKEN`)."""
        return bool(re.fullmatch(r"\..+\.tmp-[0-9a-f]+", name))

    def is_shard_file(self, rel: str) -> bool:
        """A file name synthfer gives to shard data (tar or part); others are never deleted as garbage."""
        return bool(re.fullmatch(r"shards/(shard|rejected)-\d{6,}\.tar|parts/shard-\d{6,}\.parquet", rel))


V1 = Layout(version=1)
CURRENT = V1
