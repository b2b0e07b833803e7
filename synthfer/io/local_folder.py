"""A local (or mounted) output folder: temp tagged with the build's token, fsync, rename, fsync the
folder; O_NOFOLLOW everywhere and no symbolic links among the folders written into."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable

from synthfer.io.folder import TMP_TAG, Entry, OutputFolder



class LocalFolder(OutputFolder):
    is_local = True

    def __init__(self, path: str | Path):
        self.root = Path(path).expanduser().absolute()
        self.location = str(self.root)

    def __repr__(self) -> str:
        return f"LocalFolder({self.location!r})"

    def _path(self, rel: str) -> Path:
        """root/rel, refusing a symbolic link among the folders between them: a `data/` linked to
        another output must not have that output's files listed, read, replaced or removed."""
        if not rel:
            return self.root
        path = self.root
        for part in rel.split("/")[:-1]:
            path = path / part
            _no_link(path)
        return path / rel.rsplit("/", 1)[-1]

    def _folder_path(self, rel: str) -> Path:
        """A folder to list: itself no symbolic link either."""
        path = self._path(rel)
        if rel:
            _no_link(path)
        return path

    def exists(self, rel: str) -> bool:
        try:
            os.lstat(self._path(rel))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    def is_dir(self, rel: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self._path(rel)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
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
            with os.scandir(self._folder_path(rel)) as it:
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
                os.mkdir(path)
                continue
            except FileExistsError:
                pass   # made before, or just now by the other lane: check below what it is
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR if not stat.S_ISLNK(st.st_mode) else errno.ELOOP,
                              "is a symbolic link, not a folder" if stat.S_ISLNK(st.st_mode) else "is not a folder",
                              str(path))
        return path

    def ensure_dir(self, rel_dir: str) -> None:
        """The folder `rel_dir` below the root, made if missing (through no symbolic link)."""
        self._folder(rel_dir)

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

    def remove_empty_dir(self, rel: str) -> None:
        try:
            os.rmdir(self._path(rel))
        except OSError:
            pass  # not empty (a file synthfer did not write), or already gone

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


def _no_link(path: Path) -> None:
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, "is a symbolic link, not a folder (synthfer never follows links in an "
                                       "output)", str(path))
    except (FileNotFoundError, NotADirectoryError):
        pass   # not there (yet): nothing is followed


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
