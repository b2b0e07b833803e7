"""An output folder at an fsspec URL (s3://, gs://, memory://, ...): each object written whole
with one PUT under its final name, listings never cached."""

from __future__ import annotations

import errno
import io
import time
from contextlib import contextmanager
from typing import BinaryIO, Iterable

from synthfer.errors import StoreUnavailable, SynthferError, UsageError
from synthfer.io.folder import Entry, OutputFolder

# A storage call that has not answered in this long failed (a PUT gets 1 s more per MiB): a
# stalled store must end the build with a message, not hang it, and the bound stays below a
# lease's 120 s so a build that stalled stops before another may take its output over.
CALL_TIMEOUT_S = 60.0
READ_CHUNK = 8 * 2**20       # bytes per ranged read of a streamed object
DOWN_TIMEOUT_S = 10.0        # a call once the store is known down (a build's last records, its lease)
ATTEMPTS = 3                 # a call that fails for another reason than "not found" / "exists"
BACKOFF_S = (1.0, 4.0)       # is tried again after these pauses before the build gives up


class ObjectFolder(OutputFolder):
    """An fsspec URL. Object stores write each object whole, so no temporaries and no rename."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.location = url.rstrip("/")
        self.protocol = url.split("://", 1)[0]
        self.storage_options = dict(storage_options or {})
        self._fs = None
        self._down = False

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
            def make():
                with _quiet_half_made():
                    try:
                        return fsspec.filesystem(self.protocol, skip_instance_cache=True, use_listings_cache=False,
                                                 **self.storage_options)
                    except TypeError as err:   # an option the backend does not take, or one it needs
                        problem = str(err)
                if self.storage_options:
                    raise UsageError(f"output.storage_options: {self.protocol}:// does not take them ({problem})")
                raise UsageError(f"{self.location}: {self.protocol}:// cannot be opened as an output ({problem}); "
                                 f"synthfer writes to local folders and object stores (s3://, gs://)")
            self._fs = _call(make)
        return self._fs

    def _op(self, name: str, *args, nbytes: int = 0, **kwargs):
        """fs.name(*args) through _call, with a deadline where the backend is asynchronous (s3fs,
        gcsfs: fsspec's sync layer takes `timeout`)."""
        fs = self.fs
        down = self._down   # once the store failed a call ATTEMPTS times, the rest fail fast
        if getattr(fs, "async_impl", False):
            kwargs["timeout"] = (DOWN_TIMEOUT_S if down else CALL_TIMEOUT_S) + nbytes / 2**20
        try:
            result = _call(getattr(fs, name), *args, attempts=1 if down else ATTEMPTS, **kwargs)
        except StoreUnavailable as err:
            self._down = True
            raise StoreUnavailable(f"{self.location}: {err}") from None
        self._down = False
        return result

    def _path(self, rel: str) -> str:
        root = self.fs._strip_protocol(self.location).rstrip("/")
        return f"{root}/{rel}" if rel else root

    def exists(self, rel: str) -> bool:
        return bool(self._op("exists", self._path(rel)))

    def is_dir(self, rel: str) -> bool:
        return bool(self._op("isdir", self._path(rel)))

    def size(self, rel: str) -> int:
        return int(self._op("size", self._path(rel)))

    def open(self, rel: str) -> BinaryIO:
        if not getattr(self.fs, "async_impl", False):
            return _call(self.fs.open, self._path(rel), "rb")
        # ranged reads through _op, so a stream (a tar, a digest) has the deadline of every call
        return io.BufferedReader(_RangeReader(self, self._path(rel)), buffer_size=READ_CHUNK)

    def read_bytes(self, rel: str) -> bytes:
        return self._op("cat_file", self._path(rel))

    def list(self, rel: str = "") -> list[Entry]:
        try:
            entries = self._op("ls", self._path(rel), detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self._path(rel).rstrip("/") + "/"
        out = [Entry(e["name"].rstrip("/").rsplit("/", 1)[-1], e.get("type") == "directory")
               for e in entries if e["name"].rstrip("/") + "/" != base]
        return sorted(out, key=lambda e: e.name)

    def ensure(self) -> None:
        if self.protocol in ("s3", "s3a", "gs", "gcs"):
            bucket = self._path("").split("/", 1)[0]
            if not self._op("exists", bucket):
                raise FileNotFoundError(errno.ENOENT, "no such bucket (synthfer does not create buckets)",
                                        f"{self.protocol}://{bucket}")

    def write_all(self, items: Iterable[tuple[str, bytes]]) -> None:
        for rel, data in items:
            self._op("pipe_file", self._path(rel), data, nbytes=len(data))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        try:
            self._op("pipe_file", self._path(rel), data, nbytes=len(data), mode="create")
        except FileExistsError:
            return False
        return True

    def remove(self, rel: str) -> None:
        try:
            self._op("rm_file", self._path(rel))
        except FileNotFoundError:
            pass


class _RangeReader(io.RawIOBase):
    """A stored object read in ranges, each one storage call with its deadline and tries."""

    def __init__(self, folder: ObjectFolder, path: str):
        self.folder, self.path = folder, path
        self.size = int(folder._op("size", path))
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        data = self.folder._op("cat_file", self.path, start=self.pos, end=self.pos + n, nbytes=n)
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)


@contextmanager
def _quiet_half_made():
    """A filesystem whose __init__ raised may fail again in __del__ (ftp's, with no host), when
    the error that holds it goes: Python's "Exception ignored" report is silenced meanwhile, so
    the user sees one line."""
    import gc
    import sys

    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = hook


def _call(fn, *args, attempts: int = ATTEMPTS, **kwargs):
    """Run an fsspec call up to `attempts` times while it fails with no answer (an outage, not
    "not found" or "exists"); then StoreUnavailable."""
    for attempt in range(attempts):
        try:
            return _classified(fn, *args, **kwargs)
        except OSError as err:
            if type(err) is not OSError or err.errno != errno.EIO:
                raise   # not found, exists, permission, ...: an answer, not an outage
            if attempt + 1 == attempts:
                raise StoreUnavailable(f"the object store failed {attempts} time"
                                       f"{'s in a row' if attempts > 1 else ''}: {err.strerror}") from None
            time.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])


def _classified(fn, *args, **kwargs):
    """Run an fsspec call once; anything that is not already an OSError (botocore's ClientError,
    connection errors, aiohttp's, a deadline) becomes one, so callers handle storage failures in
    one way. "Exists" and "not found" are told by the error's status or code, never by its text,
    which may hold an object name such as shard-000404."""
    try:
        return fn(*args, **kwargs)
    except TimeoutError:   # fsspec's FSTimeoutError included (an OSError, errno unset)
        raise OSError(errno.EIO, f"no answer within {kwargs.get('timeout', CALL_TIMEOUT_S):.0f} s") from None
    except (OSError, SynthferError):
        raise
    except Exception as err:  # noqa: BLE001 - backends raise their own types
        text = " ".join(str(err).split()) or type(err).__name__
        status, code = _status(err)
        if status == 412 or code == "PreconditionFailed":
            raise FileExistsError(errno.EEXIST, text) from None
        if status == 404 or code in ("NoSuchKey", "NotFound", "404"):
            raise FileNotFoundError(errno.ENOENT, text) from None
        raise OSError(errno.EIO, text) from None


def _status(err) -> tuple[int | None, str]:
    """(HTTP status, error code) of a backend's exception: botocore's `response` dict, or the
    `status` / `code` attribute of aiohttp's and gcsfs's errors."""
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return (status if isinstance(status, int) else None), str((response.get("Error") or {}).get("Code") or "")
    for name in ("status", "code", "status_code"):
        value = getattr(err, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, ""
    return None, ""
