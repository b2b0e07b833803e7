"""Shard output and the commit protocol.

A shard is three files: shards/NAME.tar (WebDataset), parts/NAME.parquet (its manifest rows) and
parts/NAME.done.json (the commit marker). Tar and part are written as temporaries, fsynced and
renamed; the marker, written the same way, comes last and records both files' sizes and
sha256s. Readers and resume trust a shard only through its marker, so "marker last" is what
makes a shard visible; on an object store, where each object is written whole, the same order
holds without any rename.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from synthfer.io import atomic
from synthfer.io.manifest import write_part

# Fixed tar header fields: the same members give the same bytes on any machine, at any time.
_MTIME = 0
_MODE = 0o644


@dataclass(frozen=True)
class Member:
    name: str    # KEY.png, KEY.json, ...
    data: bytes


def tar_bytes(members: list[Member]) -> bytes:
    """A deterministic ustar archive of the members in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.size = len(m.data)
            info.mtime, info.mode = _MTIME, _MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(m.data))
    return buf.getvalue()


def _digest(path: Path) -> dict:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"size": path.stat().st_size, "sha256": h.hexdigest()}


class ShardStore:
    """The shard files of one output directory."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.shard_dir = self.root / "shards"
        self.part_dir = self.root / "parts"

    def tar_path(self, name: str) -> Path:
        return self.shard_dir / f"{name}.tar"

    def part_path(self, name: str) -> Path:
        return self.part_dir / f"{name}.parquet"

    def marker_path(self, name: str) -> Path:
        return self.part_dir / f"{name}.done.json"

    def prepare(self) -> list[Path]:
        """Create the folders; remove temporaries that crashed writers left behind."""
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.part_dir.mkdir(parents=True, exist_ok=True)
        return atomic.remove_stale_temporaries(self.shard_dir) + atomic.remove_stale_temporaries(self.part_dir)

    def rejected_path(self, name: str) -> Path:
        return self.shard_dir / f"{name.replace('shard-', 'rejected-', 1)}.tar"

    def commit(self, name: str, members: list[Member], rejected: list[Member] | None, rows: list[dict],
               info: dict) -> dict:
        """Write the tar(s) and the part, then the marker. Returns the marker's content.

        rejected: members of shards/rejected-NNNNNN.tar (output.keep_rejected), or None for no file.
        """
        files = [(self.tar_path(name), tar_bytes(members))]
        if rejected is not None:
            files.append((self.rejected_path(name), tar_bytes(rejected)))
        temps = []
        for final, data in files:
            tmp = atomic.temp_path(final)
            tmp.write_bytes(data)
            temps.append((tmp, final))
        temps.append((write_part(self.part_path(name), rows), self.part_path(name)))
        for tmp, final in temps:
            atomic.publish(tmp, final)
        marker = dict(info, shard=name, rows=len(rows), images=sum(m.name.endswith(".json") for m in members),
                      files={str(final.relative_to(self.root)): _digest(final) for _, final in temps})
        atomic.write_json(self.marker_path(name), marker)
        return marker

    def marker(self, name: str) -> dict | None:
        """The marker of a committed shard whose files are present with the recorded sizes, else None."""
        try:
            marker = json.loads(self.marker_path(name).read_text())
        except (OSError, ValueError):
            return None
        return marker if self.problem(name, marker, hashes=False) is None else None

    def problem(self, name: str, marker: dict, hashes: bool) -> str | None:
        """What is wrong with a committed shard's files (size, or sha256 when `hashes`), else None."""
        try:
            for rel, digest in marker["files"].items():
                path = self.root / rel
                if not path.is_file():
                    return f"{rel} is missing"
                if path.stat().st_size != digest["size"]:
                    return f"{rel} has {path.stat().st_size} bytes, its marker says {digest['size']}"
                if hashes and _digest(path)["sha256"] != digest["sha256"]:
                    return f"{rel} does not match its sha256"
        except (KeyError, TypeError, AttributeError):
            return "its marker is malformed"
        return None

    def marker_names(self) -> list[str]:
        if not self.part_dir.is_dir():
            return []
        return sorted(p.name[: -len(".done.json")] for p in self.part_dir.glob("shard-*.done.json"))

    def committed(self) -> dict[str, dict]:
        """Name -> marker of every committed shard on disk (files present with recorded sizes)."""
        return {n: m for n in self.marker_names() if (m := self.marker(n)) is not None}

    def retract(self, name: str) -> None:
        """Make a shard invisible (marker first), then delete its files."""
        self.marker_path(name).unlink(missing_ok=True)
        atomic.fsync_dir(self.part_dir)
        for path in (self.tar_path(name), self.rejected_path(name), self.part_path(name)):
            path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every dataset file of this output (shards invisible first), keeping the folder."""
        for name in self.marker_names():
            self.retract(name)
        for folder in (self.shard_dir, self.part_dir):
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.is_file() and (path.suffix in (".tar", ".parquet", ".json") or atomic.TMP_TAG in path.name):
                        path.unlink()
        for name in ("manifest.parquet", "run.json", "fingerprint.json"):
            (self.root / name).unlink(missing_ok=True)
        if (self.root / "report").is_dir():  # a report of the old build would describe data that is gone
            shutil.rmtree(self.root / "report")
