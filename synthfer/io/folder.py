"""The output folder: the only code that knows where a build's files live and how they are written.

One interface, two backends (datatrove's DataFolder is the model):

* `LocalFolder`: a path on this machine or a mounted shared file system. A file is written to a
  hidden temporary tagged with the writing build's token, fsynced, renamed over its final name,
  and the folder fsynced. Files are opened with O_NOFOLLOW and folders are checked not to be
  symbolic links, so a link planted in a shared output never redirects a write.
* `ObjectFolder`: any fsspec URL (`s3://`, `gs://`, `memory://`). Each object is written whole
  with one PUT under its final name (an object store never shows half an object). There is no
  rename, so "marker last" alone makes a shard visible; unmarked objects are garbage.

Paths inside a folder are relative POSIX strings (`shards/shard-000001.tar`). Methods raise
OSError (FileNotFoundError, PermissionError, ...); callers turn them into one-line errors.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
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

    def remove_tree(self, rel: str) -> None:
        """Delete a folder and everything under it."""

    def remove_temporaries(self, rels: Iterable[str]) -> list[str]:
        """Temporaries of other (dead) builds in these folders; none on object stores."""
        return []

    def new_token(self) -> str:
        self.token = secrets.token_hex(8)
        return self.token


# ------------------------------------------------------------------------------------------------ local


class LocalFolder(OutputFolder):
    is_local = True

    def __init__(self, path: str | Path):
        self.root = Path(path).expanduser().absolute()
        self.location = str(self.root)

    def __repr__(self) -> str:
        return f"LocalFolder({self.location!r})"

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self._path(rel))

    def is_dir(self, rel: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self._path(rel)).st_mode)
        except FileNotFoundError:
            return False

    def size(self, rel: str) -> int:
        st = os.lstat(self._path(rel))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(self._path(rel)))
        return st.st_size

    def open(self, rel: str) -> BinaryIO:
        fd = os.open(self._path(rel), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", str(self._path(rel)))
        return os.fdopen(fd, "rb")

    def list(self, rel: str = "") -> list[Entry]:
        try:
            with os.scandir(self._path(rel)) as it:
                return sorted((Entry(e.name, e.is_dir(follow_symlinks=False)) for e in it), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def ensure(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", self.location)
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, rel_dir: str) -> Path:
        """The folder `rel_dir` below the root, created; refuses symbolic links on the way."""
        path = self.root
        for part in [p for p in rel_dir.split("/") if p]:
            path = path / part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR if not stat.S_ISLNK(st.st_mode) else errno.ELOOP,
                              "is a symbolic link, not a folder" if stat.S_ISLNK(st.st_mode) else "is not a folder",
                              str(path))
        return path

    def temp_name(self, rel: str) -> Path:
        folder, _, name = rel.rpartition("/")
        return self._folder(folder) / f".{name}{TMP_TAG}{self.token or self.new_token()}"

    def _write_temp(self, tmp: Path, data: bytes) -> None:
        try:
            os.unlink(tmp)  # only ever our own leftover from an earlier attempt: tokens are unique per build
        except FileNotFoundError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_all(self, items: Iterable[tuple[str, bytes]]) -> None:
        temps = []
        try:
            for rel, data in items:
                tmp = self.temp_name(rel)
                temps.append((tmp, self._path(rel)))
                self._write_temp(tmp, data)
            for tmp, final in temps:
                os.replace(tmp, final)  # replaces a link planted at `final` itself; never follows it
        except BaseException:
            for tmp, _ in temps:
                _unlink_quietly(tmp)
            raise
        for folder in sorted({final.parent for _, final in temps}):
            fsync_dir(folder)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        folder, _, _ = rel.rpartition("/")
        self._folder(folder)
        tmp = self.temp_name(rel)
        self._write_temp(tmp, data)
        try:
            os.link(tmp, self._path(rel))  # atomic "create if absent" with the whole content, NFS included
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return self._create_without_links(rel, data)  # a file system without hard links
        finally:
            _unlink_quietly(tmp)
        fsync_dir(self._path(rel).parent)
        return True

    def _create_without_links(self, rel: str, data: bytes) -> bool:
        try:
            fd = os.open(self._path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def remove(self, rel: str) -> None:
        try:
            os.unlink(self._path(rel))
        except FileNotFoundError:
            pass

    def remove_tree(self, rel: str) -> None:
        path = self._path(rel)
        if os.path.islink(path):
            os.unlink(path)
        elif path.is_dir():
            shutil.rmtree(path)

    def remove_temporaries(self, rels: Iterable[str]) -> list[str]:
        """Every temporary not tagged with this build's token: under the output's lock, no other
        build can be writing, so each is a leftover of one that died."""
        removed = []
        for rel in rels:
            for entry in self.list(rel):
                if entry.is_dir or not (entry.name.startswith(".") and TMP_TAG in entry.name):
                    continue
                if self.token is not None and entry.name.endswith(f"{TMP_TAG}{self.token}"):
                    continue
                child = f"{rel}/{entry.name}" if rel else entry.name
                self.remove(child)
                removed.append(child)
        return removed


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # not every platform lets a directory be opened; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_file(path: str | Path, data: bytes) -> None:
    """Write a file outside any output folder (e.g. `models convert`) the same safe way."""
    path = Path(path).expanduser().absolute()
    folder = LocalFolder(path.parent)
    folder.new_token()
    folder.write(path.name, data)


# ------------------------------------------------------------------------------------------------ objects


class ObjectFolder(OutputFolder):
    """An fsspec URL. Object stores write each object whole, so no temporaries and no rename."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.location = url.rstrip("/")
        self.protocol = url.split("://", 1)[0]
        self.storage_options = dict(storage_options or {})
        self._fs = None

    def __repr__(self) -> str:
        return f"ObjectFolder({self.location!r})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fs"] = None  # rebuilt where the folder is unpickled (Ray actors, worker processes)
        return state

    @property
    def fs(self):
        if self._fs is None:
            import fsspec

            # Listings are never cached: other writers (Ray actors) change the folder under us.
            self._fs = _call(fsspec.filesystem, self.protocol, skip_instance_cache=True,
                             use_listings_cache=False, **self.storage_options)
        return self._fs

    def _path(self, rel: str) -> str:
        root = self.fs._strip_protocol(self.location).rstrip("/")
        return f"{root}/{rel}" if rel else root

    def exists(self, rel: str) -> bool:
        return bool(_call(self.fs.exists, self._path(rel)))

    def is_dir(self, rel: str) -> bool:
        return bool(_call(self.fs.isdir, self._path(rel)))

    def size(self, rel: str) -> int:
        return int(_call(self.fs.size, self._path(rel)))

    def open(self, rel: str) -> BinaryIO:
        return _call(self.fs.open, self._path(rel), "rb")

    def read_bytes(self, rel: str) -> bytes:
        return _call(self.fs.cat_file, self._path(rel))

    def list(self, rel: str = "") -> list[Entry]:
        try:
            entries = _call(self.fs.ls, self._path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self._path(rel).rstrip("/") + "/"
        out = [Entry(e["name"].rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
               for e in entries if e["name"].rstrip("/") + "/" != base]
        return sorted(out, key=lambda e: e.name)

    def ensure(self) -> None:
        if self.protocol in ("s3", "s3a", "gs", "gcs"):
            bucket = self._path("").split("/", 1)[0]
            if not _call(self.fs.exists, bucket):
                raise FileNotFoundError(errno.ENOENT, "no such bucket (synthfer does not create buckets)",
                                        f"{self.protocol}://{bucket}")

    def write_all(self, items: Iterable[tuple[str, bytes]]) -> None:
        for rel, data in items:
            _call(self.fs.pipe_file, self._path(rel), data)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        try:
            _call(self.fs.pipe_file, self._path(rel), data, mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, rel: str) -> None:
        try:
            _call(self.fs.rm_file, self._path(rel))
        except FileNotFoundError:
            pass

    def remove_tree(self, rel: str) -> None:
        for child in self.files(rel):
            self.remove(child)


def _call(fn, *args, **kwargs):
    """Run an fsspec call; anything that is not already an OSError (botocore's ClientError,
    connection errors, aiohttp's) becomes one, so callers handle storage failures in one way."""
    try:
        return fn(*args, **kwargs)
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - backends raise their own types
        text = " ".join(str(err).split()) or type(err).__name__
        if "PreconditionFailed" in text or "412" in text:
            raise FileExistsError(errno.EEXIST, text) from None
        if "NoSuchKey" in text or "Not Found" in text or "404" in text:
            raise FileNotFoundError(errno.ENOENT, text) from None
        raise OSError(errno.EIO, text) from None


# ------------------------------------------------------------------------------------------------ open


def check_location(location: str) -> None:
    """ValueError with a one-line reason when `location` cannot be an output folder here."""
    if "://" not in location:
        return
    protocol = location.split("://", 1)[0]
    if protocol == "file":
        return
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
    location = str(location)
    if location.startswith("file://"):
        return LocalFolder(location[len("file://"):])
    if "://" in location:
        check_location(location)
        return ObjectFolder(location, storage_options)
    return LocalFolder(location)


def is_url(location: str) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")
