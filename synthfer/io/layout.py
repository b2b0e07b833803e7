"""Where each kind of file sits inside an output folder, per format version.

Every relative name an output holds is made here, so a change of layout touches this module
only. Format 2 (what synthfer writes) names accepted shards by split, so `load_dataset(OUT)` and
glob patterns find each split's data and nothing else:

    README.md                     dataset card (Hugging Face front matter: configs per split, licence)
    classes.json                  when the recipe has classes
    calibration.json              correction.mode calibrate/both: the pilot's per-direction correction
    data/{split}-NNNNNN.tar       accepted samples (split: train | val | test)
    rejected/rejected-NNNNNN.tar  rejected samples, only with output.keep_rejected
    manifest.parquet, run.json
    _synthfer/                    bookkeeping: fingerprint.json, parts/shard-NNNNNN.{parquet,done.json}
    .lock, .lease-NNNNNN.json     the build lock (hidden, at the root in every version)

Format 1 (synthfer 0.1) kept shards in shards/ and bookkeeping in parts/ and the root; `verify`
and `report` still read it, a build asks for it to be rebuilt (--mode overwrite).
"""

from __future__ import annotations

import re


class Layout:
    version = 2
    data_dir = "data"
    marker_dir = "_synthfer/parts"
    manifest = "manifest.parquet"
    run_json = "run.json"
    classes = "classes.json"
    calibration = "calibration.json"
    card = "README.md"
    fingerprint = "_synthfer/fingerprint.json"
    lock = ".lock"
    lease_dir = ""
    report_dir = "report"
    # Folders synthfer writes files in (temporaries are looked for here) and those that hold shard
    # files (unmarked ones are garbage).
    data_dirs = ("", "data", "rejected", "_synthfer", "_synthfer/parts", "report")
    shard_dirs = ("data", "rejected", "_synthfer/parts")
    _shard_file = re.compile(r"data/(train|val|test)-\d{6,}\.tar|rejected/rejected-\d{6,}\.tar"
                             r"|_synthfer/parts/shard-\d{6,}\.parquet")

    # ---------------------------------------------------------------- per shard
    def tar(self, index: int, split: str) -> str:
        """Accepted samples of shard `index` (WebDataset tar), named by its split."""
        return f"data/{split}-{index:06d}.tar"

    def rejected_tar(self, index: int, split: str) -> str:
        """Rejected samples kept with output.keep_rejected: a folder no split pattern matches."""
        return f"rejected/rejected-{index:06d}.tar"

    def part(self, index: int) -> str:
        """The shard's manifest rows (Parquet)."""
        return f"{self.marker_dir}/shard-{index:06d}.parquet"

    def marker(self, index: int) -> str:
        """The commit marker: written last, lists the shard's files with sizes and sha256s."""
        return f"{self.marker_dir}/shard-{index:06d}.done.json"

    def marker_index(self, name: str) -> int | None:
        """Shard index of a file name in `marker_dir`, when it is a marker."""
        m = re.fullmatch(r"shard-(\d{6,})\.done\.json", name)
        return int(m.group(1)) if m else None

    def split_pattern(self, split: str) -> str:
        """A glob of one split's accepted shards, relative to the output (the card's data_files)."""
        return f"{self.data_dir}/{split}-*.tar"

    # ---------------------------------------------------------------- whole output
    def lease(self, generation: int) -> str:
        return f".lease-{generation:06d}.json"

    def lease_generation(self, name: str) -> int | None:
        m = re.fullmatch(r"\.lease-(\d{6,})\.json", name)
        return int(m.group(1)) if m else None

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
        return bool(self._shard_file.fullmatch(rel))


class LayoutV1(Layout):
    version = 1
    data_dir = "shards"
    marker_dir = "parts"
    fingerprint = "fingerprint.json"
    data_dirs = ("", "shards", "parts", "report")
    shard_dirs = ("shards", "parts")
    _shard_file = re.compile(r"shards/(shard|rejected)-\d{6,}\.tar|parts/shard-\d{6,}\.parquet")

    def tar(self, index: int, split: str) -> str:
        return f"shards/shard-{index:06d}.tar"

    def rejected_tar(self, index: int, split: str) -> str:
        return f"shards/rejected-{index:06d}.tar"

    def split_pattern(self, split: str) -> str:
        raise ValueError("format 1 outputs do not name shards by split; read the manifest's shard column")


V1, V2 = LayoutV1(), Layout()
CURRENT = V2


def layout_of(folder) -> Layout:
    """The layout of an existing output (format 2 for a new or empty folder)."""
    if folder.exists("_synthfer"):
        return V2
    if folder.exists(V1.fingerprint) or folder.is_dir(V1.marker_dir):
        return V1
    return V2
