"""The output folder: the only code that knows where a build's files live and how they are written.

One interface, two backends (datatrove's DataFolder is the model):

* `LocalFolder` (io/local_folder.py): a path on this machine or a mounted shared file system. A file is written to a
  hidden temporary tagged with the writing build's token, fsynced, renamed over its final name,
  and the folder fsynced. Files are opened with O_NOFOLLOW and folders are checked not to be
  symbolic links, so a link planted in a shared output never redirects a write.
* `ObjectFolder` (io/object_folder.py): any fsspec URL (`s3://`, `gs://`, `memory://`). Each object is written whole
  with one PUT under its final name (an object store never shows half an object). There is no
  rename, so "marker last" alone makes a shard visible; unmarked objects are garbage.

Paths inside a folder are relative POSIX strings (`shards/shard-000001.tar`). Methods raise
OSError (FileNotFoundError, PermissionError, ...); callers turn them into one-line errors.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable

TMP_TAG = ".tmp-"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool


class OutputFolder:
    """Where a build's output lives. `token` tags this build's temporaries (set by the lock)."""

    location: str
    token: str | None = None
    is_local: bool = False
    lease_generation: int | None = None   # set by a lease lock; workers check it before committing

    # -- names
    def display(self, rel: str = "") -> str:
        """The full name of a file, for messages."""
        return self.location if not rel else f"{self.location.rstrip('/')}/{rel}"

    def url(self, rel: str = "") -> str:
        """A name other libraries (pyarrow, webdataset, fsspec) can open."""
        return self.display(rel)

    # -- reading
    def exists(self, rel: str) -> bool: ...
    def is_dir(self, rel: str) -> bool: ...
    def size(self, rel: str) -> int: ...
    def open(self, rel: str) -> BinaryIO: ...
    def list(self, rel: str = "") -> list[Entry]: ...

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def digest(self, rel: str) -> dict:
        """{"size", "sha256"} of a stored file, streamed."""
        h, size = hashlib.sha256(), 0
        with self.open(rel) as f:
            for block in iter(lambda: f.read(_CHUNK), b""):
                h.update(block)
                size += len(block)
        return {"size": size, "sha256": h.hexdigest()}

    def files(self, rel: str = "") -> list[str]:
        """Relative paths of every file below `rel`, sorted."""
        out = []
        for entry in self.list(rel):
            child = f"{rel}/{entry.name}" if rel else entry.name
            out += self.files(child) if entry.is_dir else [child]
        return sorted(out)

    # -- writing
    def ensure(self) -> None:
        """Create the folder if needed (a local folder and its parents; a bucket must exist)."""

    def write(self, rel: str, data: bytes) -> None:
        self.write_all([(rel, data)])

    def write_all(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Write every file whole; each appears under its final name only complete."""

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist, atomically; False when it already existed."""

    def remove(self, rel: str) -> None:
        """Delete a file; a missing one is no error."""

    def remove_empty_dir(self, rel: str) -> None:
        """Delete a folder if it is empty (object stores have no folders to delete)."""

    def remove_temporaries(self, rels: Iterable[str]) -> list[str]:
        """Temporaries of other (dead) builds in these folders; none on object stores."""
        return []

    def new_token(self) -> str:
        self.token = secrets.token_hex(8)
        return self.token


# ------------------------------------------------------------------------------------------------ open


def check_location(location: str) -> None:
    """ValueError with a one-line reason when `location` cannot be an output folder here."""
    if "://" not in location:
        return
    protocol, _, rest = location.partition("://")
    if protocol == "file":
        return
    if protocol != "memory" and not rest.strip("/"):
        raise ValueError(f"{location} names no bucket or folder; write e.g. {protocol}://bucket/path")
    import fsspec

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        extra = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}.get(protocol)
        hint = f"pip install 'synthfer[{extra}]'" if extra else "install the fsspec package for it"
        raise ValueError(f"{protocol}:// needs a storage package: {hint}") from None
    except ValueError:
        raise ValueError(f"unknown storage protocol {protocol}:// (local paths, s3://, gs://, memory:// "
                         f"and other fsspec URLs)") from None


def open_folder(location: str | Path, storage_options: dict | None = None) -> OutputFolder:
    """The folder at a local path or an fsspec URL."""
    from synthfer.io.local_folder import LocalFolder
    from synthfer.io.object_folder import ObjectFolder

    location = without_file_scheme(str(location))
    if "://" in location:
        check_location(location)
        return ObjectFolder(location, storage_options)
    return LocalFolder(location)


def without_file_scheme(location: str) -> str:
    """A `file://` URL as the local path it names (file:///data/x and file://localhost/data/x ->
    /data/x, %20 decoded); else as given. ValueError for another host's file:// URL."""
    if not location.startswith("file://"):
        return location
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(location)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file:// URL of another host ({parts.netloc}); name a local folder (file:///path) "
                         f"or mount it")
    return unquote(parts.path)


def is_url(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")
