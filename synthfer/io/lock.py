"""One build per output folder: an OS lock on a local folder, a lease object on an object store.

* `FlockLock` (local folders): flock on `.lock`, held by the open file, so the kernel releases
  it when the holder dies, however it dies. The file is opened with O_NOFOLLOW and must be a
  regular file; it is never truncated (its fixed-size record names the holder for the error a
  second build prints). `verify` takes it shared.
* `Lease` (object stores, and local file systems without locks via `output.lock: lease`):
  numbered lease objects `.lease-NNNNNN.json` written with a create-if-absent PUT (S3
  If-None-Match, GCS ifGenerationMatch=0, O_EXCL/link locally). The holder renews its object's
  expiry every RENEW_S seconds; a lease that expired, or whose holder is a dead process on this
  very host, is taken over by creating the next number, which only one contender can do. A
  holder stops before its next commit when it sees a newer number, or its own lease expired
  (not renewed in time) or gone.

Both give the folder a fresh `token`: the build's temporaries carry it, so anything tagged with
another token is a dead build's leftover, whatever its pid now belongs to.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time

from synthfer.errors import LockedError, OutputError, StoreUnavailable, SynthferError, UsageError
from synthfer.io.folder import OutputFolder
from synthfer.io.local_folder import LocalFolder
from synthfer.io.layout import Layout

_RECORD_BYTES = 512
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}
LOCK_METHODS = ("auto", "flock", "lease")


def output_lock(folder: OutputFolder, layout: Layout, method: str = "auto", shared: bool = False):
    """The lock for this folder: flock on local folders, a lease on object stores, or what the
    build recorded in fingerprint.json (output.lock: lease), so verify and report use the same."""
    if method == "auto":
        method = recorded_method(folder, layout) or ("flock" if folder.is_local else "lease")
    if method == "lease" or not folder.is_local:
        return Lease(folder, layout, shared=shared)
    return FlockLock(folder, layout, shared=shared)


def probe(folder: OutputFolder, layout: Layout) -> None:
    """LockedError now when another build holds the output, by either method: checked before
    the models load (seconds, and memory a GPU may not have twice), so an overlapping cron run
    exits 75 at once. The lock itself is taken later; anything else wrong is reported then."""
    if folder.is_local and folder.exists(layout.lock):
        try:
            with FlockLock(folder, layout, shared=True):
                pass
        except LockedError:
            raise
        except (SynthferError, OSError):
            pass
    try:
        holder = Lease(folder, layout).current_holder()
    except OSError:
        return
    if holder is not None:
        raise lease_held(folder, holder)


def lease_held(folder: OutputFolder, holder: dict) -> LockedError:
    return LockedError(f"{folder.location}: another build holds the lease ({describe(holder)}, expires in "
                       f"{max(0, holder['expires'] - time.time()):.0f} s); wait for it or stop it", describe(holder))


def recorded_method(folder: OutputFolder, layout: Layout) -> str | None:
    try:
        method = json.loads(folder.read_bytes(layout.fingerprint)).get("lock")
    except (OSError, ValueError, AttributeError):
        return None
    return method if method in ("flock", "lease") else None


def holder_record(token: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(),
            "process_start": _process_start(os.getpid()), "token": token,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def describe(info: dict | None) -> str:
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"


class FlockLock:
    method = "flock"

    def __init__(self, folder: LocalFolder, layout: Layout, shared: bool = False):
        self.folder, self.layout, self.shared = folder, layout, shared
        self.path = folder.root / layout.lock
        self._fd: int | None = None

    def __enter__(self) -> "FlockLock":
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise OutputError(f"{self.path}: is a symbolic link; synthfer never follows links in an "
                                  f"output folder; remove it") from None
            if self.shared and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return self  # a read-only output: nobody can be building into it
            raise OutputError(f"{self.path}: cannot open the build lock: {err.strerror or err}") from None
        try:
            if not _is_regular(fd):
                raise OutputError(f"{self.path}: is not a regular file; remove it")
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _read_record(fd)
                # The record names the last build; if that process is gone, a verify or report
                # (which hold the lock shared and write no record) is reading the output.
                holder = ("a synthfer verify or report reading it" if isinstance(record, dict) and _gone(record)
                          else describe(record))
                raise LockedError(f"{self.folder.location}: another build holds the lock ({holder}); wait for it "
                                  f"or stop it", holder) from None
            except OSError as err:
                if err.errno in _NO_LOCKS and self.shared:  # verify: a lease is the other way to tell
                    Lease(self.folder, self.layout, shared=True).__enter__()
                    return self
                if err.errno in _NO_LOCKS:
                    raise UsageError(f"{self.folder.location}: the file system has no file locks (flock: "
                                     f"{err.strerror}); set output.lock: lease on every machine that builds "
                                     f"into this folder") from None
                raise
            if not self.shared:
                holder = Lease(self.folder, self.layout).current_holder()   # a build with output.lock: lease
                if holder is not None:
                    raise lease_held(self.folder, holder)
                record = json.dumps(holder_record(self.folder.new_token())).encode()
                try:  # fixed size, never truncated: a reader always sees one whole record
                    os.pwrite(fd, record.ljust(_RECORD_BYTES), 0)
                except OSError as err:
                    raise OutputError(f"{self.path}: cannot write the build lock: {err.strerror or err}") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _read_record(fd: int) -> dict | None:
    try:
        return json.loads(os.pread(fd, _RECORD_BYTES * 2, 0).decode("utf-8", "replace").strip() or "{}")
    except (ValueError, OSError):
        return None


# ------------------------------------------------------------------------------------------------ lease


class Lease:
    method = "lease"
    TTL_S = 120.0     # a lease not renewed for this long may be taken over
    RENEW_S = 30.0    # how often the holder renews it

    def __init__(self, folder: OutputFolder, layout: Layout, shared: bool = False):
        self.folder, self.layout, self.shared = folder, layout, shared
        self.generation: int | None = None
        self.record: dict = {}
        self.lost = False
        self._flock: FlockLock | None = None   # on a local folder, also the lock a flock build takes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _generations(self) -> list[int]:
        gens = [self.layout.lease_generation(e.name) for e in self.folder.list(self.layout.lease_dir)]
        return sorted(g for g in gens if g is not None)

    def _read(self, generation: int) -> dict | None:
        try:
            info = json.loads(self.folder.read_bytes(self.layout.lease(generation)))
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def current_holder(self) -> dict | None:
        """The record of a live lease, else None."""
        gens = self._generations()
        info = self._read(gens[-1]) if gens else None
        return info if info is not None and _alive(info) else None

    def __enter__(self) -> "Lease":
        try:
            return self._take()
        except BaseException:
            if self._flock is not None:   # taken on the way: not held by a build that failed to start
                self._flock.__exit__()
                self._flock = None
            raise

    def _take(self) -> "Lease":
        try:
            holder = self.current_holder()
            if holder is not None:
                raise lease_held(self.folder, holder)
            if self.shared:
                return self  # verify: nobody is building; nothing to hold
            if self.folder.is_local:   # so a build with output.lock: flock (or auto) is kept out too
                self._flock = FlockLock(self.folder, self.layout)
                try:
                    self._flock.__enter__()
                except UsageError:
                    self._flock = None   # no file locks on this file system: the lease alone
            gens = self._generations()
            self.generation = gens[-1] + 1 if gens else 0
            self.record = dict(holder_record(self.folder.new_token()), generation=self.generation)
            payload = self._payload()
            if not self.folder.create_exclusive(self.layout.lease(self.generation), payload) and \
                    self._read(self.generation) != json.loads(payload):   # a retried create finds its own lease
                raise LockedError(f"{self.folder.location}: another build took the lease at the same moment")
            for old in gens:
                self.folder.remove(self.layout.lease(old))
        except OSError as err:
            raise OutputError(f"{self.folder.location}: cannot take the build lease: {err.strerror or err}") from None
        self.folder.lease_generation = self.generation
        self._thread = threading.Thread(target=self._renew, name="synthfer-lease", daemon=True)
        self._thread.start()
        return self

    def _payload(self) -> bytes:
        self.record["expires"] = time.time() + self.TTL_S
        return json.dumps(self.record, sort_keys=True).encode()

    def _renew(self) -> None:
        while not self._stop.wait(self.RENEW_S):
            try:
                if self._generations()[-1:] != [self.generation]:
                    self.lost = True
                    return
                self.folder.write(self.layout.lease(self.generation), self._payload())
            except (OSError, StoreUnavailable):
                if time.time() > self.record.get("expires", 0):
                    self.lost = True  # could not renew in time: someone may have taken it over
                    return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.generation is not None and not self.lost:
            try:
                mine = self._read(self.generation)
                if mine is not None and mine.get("token") == self.record.get("token"):
                    self.folder.remove(self.layout.lease(self.generation))
            except (OSError, StoreUnavailable):
                pass  # it expires by itself
        if self._flock is not None:   # last: a build that gets the flock finds no live lease
            self._flock.__exit__()
            self._flock = None


def check_lease(folder: OutputFolder, layout: Layout) -> None:
    """Before each commit (in the driver or a worker): stop when the build's lease was taken over,
    or has expired (not renewed for TTL_S, e.g. the store was unreachable) or is gone, since from
    then on another build may take it at any moment. One listing and one read per commit."""
    generation = getattr(folder, "lease_generation", None)
    if generation is None:
        return
    gens = [layout.lease_generation(e.name) for e in folder.list(layout.lease_dir)]
    newest = max((g for g in gens if g is not None), default=None)
    if newest is not None and newest > generation:
        raise LockedError(f"{folder.location}: another build took over the lease; this build stops")
    try:
        info = json.loads(folder.read_bytes(layout.lease(generation)))
        expires = float(info["expires"])
    except (FileNotFoundError, NotADirectoryError, ValueError, KeyError, TypeError):
        expires = None   # gone or damaged; any other OSError (a store's 503) fails this commit, which is retried
    if expires is None or time.time() > expires:
        raise LockedError(f"{folder.location}: this build's lease {'expired' if expires is not None else 'is gone'} (not "
                          f"renewed within {Lease.TTL_S:.0f} s); this build stops so that no two builds write "
                          f"at once; run it again")


def _alive(info: dict) -> bool:
    """A lease is live until it expires, unless its holder is a dead process on this host."""
    try:
        if time.time() > float(info["expires"]):
            return False
    except (KeyError, TypeError, ValueError):
        return False  # a damaged lease protects nothing
    return not _gone(info)


def _gone(info: dict) -> bool:
    """The holder record names a process on this host (this boot) that no longer runs."""
    if info.get("host") != socket.gethostname() or info.get("boot_id") != _boot_id():
        return False
    pid = info.get("pid")
    return not isinstance(pid, int) or _process_start(pid) != info.get("process_start")


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Start time of a live process (clock ticks since boot), None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return -1  # alive, start time unknown (not Linux)
