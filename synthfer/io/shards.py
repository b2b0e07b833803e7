"""The commit protocol: a shard's files, then its marker, through the output folder.

A shard is its data files (accepted tar, rejected tar with keep_rejected, the Parquet part) and
a marker written last that lists each file with its size and sha256. Readers and resume trust a
shard only through its marker, so "marker last" is what makes a shard visible: locally each file
is renamed into place whole before the marker is, on an object store each is one PUT.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass

from synthfer.io.folder import OutputFolder
from synthfer.io.layout import CURRENT, Layout
from synthfer.io.lock import check_lease

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


def _members(folder: OutputFolder, rel: str) -> list[tuple[str, bytes]]:
    with folder.open(rel) as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


class ShardStore:
    """The committed shards of one output folder."""

    def __init__(self, folder: OutputFolder, layout: Layout = CURRENT):
        self.folder, self.layout = folder, layout

    def commit(self, index: int, files: dict[str, bytes], info: dict) -> dict:
        """Write the shard's files, then its marker, then remove what its previous commit had and
        this one has not (a rejected tar once keep_rejected is off). Returns the marker's content."""
        check_lease(self.folder, self.layout)  # a build that lost its lease must not publish more
        try:
            previous = self.read_marker(index).get("files") or {}
        except (OSError, ValueError):
            previous = {}
        self.folder.write_all(files.items())
        marker = dict(info, shard=shard_name(index),
                      files={rel: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                             for rel, data in sorted(files.items())})
        check_lease(self.folder, self.layout)  # again before publishing: the files may have taken long
        self.folder.write(self.layout.marker(index), (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())
        for rel in sorted(set(previous) - set(files)):   # a kill before this leaves them to garbage()
            if isinstance(rel, str) and self.layout.is_shard_file(rel):
                self.folder.remove(rel)
        return marker

    def marker_indices(self) -> list[int]:
        found = (self.layout.marker_index(e.name) for e in self.folder.list(self.layout.marker_dir))
        return sorted(i for i in found if i is not None)

    def read_marker(self, index: int) -> dict:
        """A marker's content; OSError / ValueError when it cannot be read as one."""
        marker = json.loads(self.folder.read_bytes(self.layout.marker(index)))
        if not isinstance(marker, dict):
            raise ValueError("not a JSON object")
        return marker

    def problem(self, index: int, marker: dict, hashes: bool) -> str | None:
        """What is wrong with a committed shard's files (size, or sha256 when `hashes`), else None."""
        files = marker.get("files")
        if not isinstance(files, dict) or not isinstance(marker.get("rows"), int):
            return "its marker is malformed"
        if self.layout.part(index) not in files:
            return "its marker lists no manifest part"
        try:
            for rel, digest in sorted(files.items()):
                if not isinstance(digest, dict):
                    return "its marker is malformed"
                try:
                    size = self.folder.size(rel)
                except FileNotFoundError:
                    return f"{rel} is missing"
                if size != digest.get("size"):
                    return f"{rel} has {size} bytes, its marker says {digest.get('size')}"
                if hashes and self.folder.digest(rel)["sha256"] != digest.get("sha256"):
                    return f"{rel} does not match its sha256"
        except OSError as err:
            return f"cannot be read ({err.strerror or err})"
        return None

    def committed(self) -> dict[int, dict]:
        """Index -> marker of every committed shard whose files are present with the recorded sizes."""
        out = {}
        for index in self.marker_indices():
            try:
                marker = self.read_marker(index)
            except (OSError, ValueError):
                continue
            if self.problem(index, marker, hashes=False) is None:
                out[index] = marker
        return out

    def reusable(self, index: int, fingerprint: str, composition: str) -> tuple[dict, dict] | None:
        """(rows by key, stored images by key as (member name, bytes, width, height)) of a committed
        shard made with this generation fingerprint and composition, else None."""
        from synthfer.io.manifest import read_table

        try:
            marker = self.read_marker(index)
        except (OSError, ValueError):
            return None
        if (marker.get("fingerprint"), marker.get("composition")) != (fingerprint, composition) or \
                self.problem(index, marker, hashes=False) is not None:
            return None
        try:
            rows = {r["key"]: r for r in read_table(self.folder.read_bytes(self.layout.part(index))).to_pylist()}
        except ValueError:
            return None   # a damaged part (only sizes were checked): render the shard again
        images = {}
        for rel in marker["files"]:
            if rel.endswith(".tar"):
                for name, data in _members(self.folder, rel):
                    key, _, ext = name.partition(".")
                    if ext != "json" and key in rows:
                        images[key] = (name, data, rows[key]["width"], rows[key]["height"])
        return rows, images

    def owned_files(self, index: int, marker: dict | None = None) -> list[str]:
        """Every file name this shard may have: its marker's list and the layout's names."""
        listed = list((marker or {}).get("files") or {}) if isinstance(marker, dict) else []
        defaults = [self.layout.part(index)] + [name for split in ("train", "val", "test")
                                                for name in (self.layout.tar(index, split),
                                                             self.layout.rejected_tar(index, split))]
        return sorted({rel for rel in listed + defaults if self.layout.is_shard_file(rel)})

    def retract(self, index: int) -> None:
        """Make a shard invisible (marker first), then delete its files."""
        try:
            marker = self.read_marker(index)
        except (OSError, ValueError):
            marker = None
        self.folder.remove(self.layout.marker(index))
        for rel in self.owned_files(index, marker):
            self.folder.remove(rel)

    def garbage(self) -> list[str]:
        """Shard files no marker accounts for: left by a build that died before committing them."""
        referenced: set[str] = set()
        for index in self.marker_indices():
            try:
                referenced.update(self.read_marker(index).get("files") or {})
            except (OSError, ValueError, AttributeError):
                continue
        found = [rel for folder in self.layout.shard_dirs for rel in self.folder.files(folder)]
        return [rel for rel in sorted(found) if self.layout.is_shard_file(rel) and rel not in referenced]


def is_output(folder: OutputFolder, layout: Layout | None = None) -> bool:
    """True when synthfer's own signature is there (in the given layout, else in any): a
    fingerprint.json synthfer wrote, or a commit marker. Other files of those names (a user's
    run.json) do not make a folder ours."""
    if layout is None:
        from synthfer.io.layout import V1, V2

        return is_output(folder, V2) or is_output(folder, V1)
    try:
        record = json.loads(folder.read_bytes(layout.fingerprint))
        if isinstance(record, dict) and (record.get("written_by") == "synthfer" or (
                isinstance(record.get("fingerprint"), str) and isinstance(record.get("inputs"), dict)
                and "shard_fingerprint" in record)):
            return True
    except (OSError, ValueError):
        pass
    store = ShardStore(folder, layout)
    for index in store.marker_indices():
        try:
            marker = store.read_marker(index)
        except (OSError, ValueError):
            continue
        if marker.get("shard") == shard_name(index) and isinstance(marker.get("files"), dict):
            return True
    return False
