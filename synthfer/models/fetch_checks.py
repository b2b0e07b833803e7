"""What `fetch` checks a download against and how it unpacks one: the models folder's
SHA256SUMS pins, the registry's size / sha256 / git blob id, and the one member of a zip."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import zipfile
import zlib
from pathlib import Path

from synthfer.errors import DownloadError, first_line
from synthfer.models.catalog import Entry

SUMS = "SHA256SUMS"
CHUNK = 1 << 16
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")


def pins(folder: Path) -> dict[str, str]:
    """File name -> sha256 from `folder/SHA256SUMS` (`sha256sum` format; `sha256sum -c` checks it)."""
    path = Path(folder) / SUMS
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise DownloadError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _SUM_LINE.fullmatch(line)
        if not match:
            raise DownloadError(f"{path}:{number}: not a sha256sum line (64 hex digits, two spaces, a file name)")
        found[match[2]] = match[1].lower()
    return found


def _write_chunk(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _extract(entry: Entry, archive: Path, url: str, target: Path) -> None:
    """Copy the one member named `entry.file` (in any folder of the zip) to `target`."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            found = [m for m in zipped.infolist() if not m.is_dir() and posixpath.basename(m.filename) == entry.file]
            if len(found) != 1:
                what = "no member" if not found else f"{len(found)} members ({', '.join(m.filename for m in found)})"
                _unlink(archive)
                raise DownloadError(f"{entry.name}: {url}: the zip has {what} named {entry.file}; deleted the download")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                with zipped.open(found[0]) as member:
                    while chunk := member.read(CHUNK):
                        _write_chunk(fd, chunk)
                os.fsync(fd)
            finally:
                os.close(fd)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:  # BadZipFile also means "Bad CRC-32"
        _unlink(archive)
        _unlink(target)
        why = first_line(err)
        raise DownloadError(f"{entry.name}: {url}: not a usable zip ({why}); deleted the download") from None


def _digests(path: Path, with_blob: bool) -> tuple[str, int, str | None]:
    """(sha256, size, git blob sha1): git's id for a file is sha1 over "blob <size>\\0" + bytes."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        sha256 = hashlib.sha256()
        blob = hashlib.sha1(b"blob %d\0" % size) if with_blob else None
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            if blob is not None:
                blob.update(chunk)
    return sha256.hexdigest(), size, blob.hexdigest() if blob is not None else None


def _mismatch(entry: Entry, sha256: str, size: int, blob: str | None, pinned: str | None, sums: Path) -> str | None:
    """What does not match (the first thing), or None."""
    if entry.size is not None and size != entry.size:
        return f"got {size} bytes where the registry states {entry.size}"
    if entry.sha256 and sha256 != entry.sha256:
        return f"got sha256 {sha256} where the registry states {entry.sha256}"
    if entry.git_blob_sha1 and blob != entry.git_blob_sha1.lower():
        return f"got git blob sha1 {blob} where the registry states {entry.git_blob_sha1}"
    if pinned and sha256 != pinned:
        return f"got sha256 {sha256} where {sums} states {pinned}"
    return None
