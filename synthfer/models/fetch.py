"""Download a registry entry into the models folder (`synthfer models fetch NAME`).

More than a GET because the weights are hundreds of MB from servers that drop connections:
- the bytes go to a hidden `.<file>.partial` (`.<file>.zip.partial` for zips) and reach the
  file's own name only when complete and verified, so a half-written file is never seen;
- a dropped connection resumes with an HTTP Range request, within a run (`attempts`) and across
  runs: the partial stays when every attempt failed, and the same command continues it;
- verification: the size, sha256 and git blob id the registry states, and the folder's own
  SHA256SUMS pin. Whatever hash the registry does not state is pinned on first download (and
  printed), so a later download or file that differs is refused instead of silently used.

For `archive: zip` entries the registry's size and hashes, and the pin, are those of the member
saved as `file`; the zip itself is checked for completeness and by its own CRCs.

A mirror (`mirror=`) is a plain folder of the files served over HTTP(S), each under the name its
publisher's URL ends with (`file` for Google Drive URLs), e.g. `python -m http.server` run in a
folder holding ffhq.pkl and OFIQ-MODELS.zip. Proxies come from HTTPS_PROXY / HTTP_PROXY /
NO_PROXY, as httpx reads them.
"""

from __future__ import annotations

import errno
import importlib.metadata
import os
import posixpath
import re
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from synthfer.errors import DownloadError, UsageError, first_line
from synthfer.io.local_folder import fsync_dir, write_file
from synthfer.models.catalog import Entry
from synthfer.models.fetch_checks import (CHUNK, SUMS, _digests, _extract, _mismatch, _unlink,  # noqa: F401
                                          _write_chunk, pins)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two fetches of one file are then the user's lookout
    fcntl = None

RETRY_STATUS = {408, 429, 500, 502, 503, 504}  # the server's passing trouble: ask again
GOOGLE_DRIVE = {"drive.google.com", "drive.usercontent.google.com", "docs.google.com"}
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


@dataclass(frozen=True)
class Fetched:
    name: str
    path: Path
    sha256: str
    size: int
    action: str   # "downloaded" | "resumed" | "already there"
    pinned: bool  # this fetch pinned a sha256 the registry does not state


class _Retry(Exception):
    """A passing failure (dropped connection, timeout, 5xx): ask the same URL again, resuming."""


class _Skip(Exception):
    """This URL cannot serve the file (404, web page, refused): try the next URL."""


def fetch(entry: Entry, folder: Path, *, mirror: str | None = None, accept_licence: bool = False,
          console=None, attempts: int = 4, backoff: float = 1.0, timeout: float = 30.0) -> Fetched:
    """Download `entry` into `folder / entry.file`, verify and pin it (see the module docstring)."""
    if not entry.commercial and not accept_licence:
        raise UsageError(_licence_line(entry))
    urls = _urls(entry, mirror)
    folder = Path(folder).expanduser().absolute()
    final = folder / entry.file
    with _local(entry, folder):
        folder.mkdir(parents=True, exist_ok=True)
    pinned = pins(folder).get(entry.file)
    if final.exists():
        return _already_there(entry, final, pinned, console)

    download = folder / f".{entry.file}{'.zip' if entry.archive else ''}.partial"
    with _local(entry, folder):
        fd = _claim(entry, download)
    try:
        with _client(entry, timeout) as client, _progress(console) as bar:
            with _local(entry, folder, download):
                action, url = _Transfer(entry, final, download, fd, client, bar, attempts, backoff, timeout).run(urls)
        result = download
        if entry.archive:
            result = folder / f".{entry.file}.partial"
            with _local(entry, folder, download, result):
                _extract(entry, download, url, result)
        with _local(entry, folder, download, result):
            sha, size, blob = _digests(result, bool(entry.git_blob_sha1))
        wrong = _mismatch(entry, sha, size, blob, pinned, folder / SUMS)
        if wrong:
            _unlink(download)
            _unlink(result)
            raise DownloadError(f"{entry.name}: {url}: {wrong}; deleted the download")
        with _local(entry, folder, result):
            os.replace(result, final)
            fsync_dir(folder)
        if entry.archive:
            _unlink(download)
    finally:
        _release(fd, download)
    new_pin = _pin(entry, folder, sha, console)
    return Fetched(entry.name, final, sha, size, action, new_pin)


def _licence_line(entry: Entry) -> str:
    where = entry.licence_url or entry.page
    read = f"read {where}, then" if where else "read its licence, then"
    return (f"{entry.name}: not for commercial use ({entry.licence}): "
            f"{read} fetch it with --accept-licence {entry.name}")


def _urls(entry: Entry, mirror: str | None) -> list[str]:
    if mirror is None:
        return list(entry.urls)
    if not mirror.lower().startswith(("http://", "https://")):
        raise UsageError(f"--mirror must be an http:// or https:// URL of a folder of the files, got {mirror!r}")
    first = urlsplit(entry.urls[0])
    name = posixpath.basename(first.path)
    if not name or (first.hostname or "").lower() in GOOGLE_DRIVE:
        name = quote(entry.file)  # Drive's path is /download or /uc: the file has no name there
    return [f"{mirror.rstrip('/')}/{name}"]


def _already_there(entry: Entry, final: Path, pinned: str | None, console) -> Fetched:
    with _local(entry, final.parent):
        sha, size, blob = _digests(final, bool(entry.git_blob_sha1))
    wrong = _mismatch(entry, sha, size, blob, pinned, final.parent / SUMS)
    if wrong:
        raise DownloadError(f"{entry.name}: {final} differs from its pin: {wrong}; move it away to fetch it again")
    return Fetched(entry.name, final, sha, size, "already there", _pin(entry, final.parent, sha, console))


def _client(entry: Entry, timeout: float) -> httpx.Client:
    """Redirects followed (GitHub raw URLs redirect); proxies from the environment (trust_env)."""
    try:
        from synthfer import __version__ as version
    except ImportError:
        try:
            version = importlib.metadata.version("synthfer")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
    headers = {"User-Agent": f"synthfer/{version} python-httpx/{httpx.__version__}",
               "Accept-Encoding": "identity"}  # ranges count bytes of the stored file, not of a gzip
    try:
        return httpx.Client(follow_redirects=True, timeout=timeout, headers=headers)
    except (ValueError, ImportError) as err:  # e.g. a socks:// proxy without socksio installed
        raise DownloadError(f"{entry.name}: cannot use the proxy set in the environment ({err})") from None


class _Transfer:
    """One file's download: the partial's descriptor, the client, the bar, the retry policy."""

    def __init__(self, entry, final, partial, fd, client, bar, attempts, backoff, timeout):
        self.entry, self.final, self.partial, self.fd = entry, final, partial, fd
        self.client, self.progress, self.task = client, bar, None
        self.attempts, self.backoff, self.timeout = max(1, attempts), backoff, timeout

    def run(self, urls: list[str]) -> tuple[str, str]:
        """(action, the URL that served it); the last URL's error when none could."""
        last = ""
        for url in urls:
            try:
                return self._from_url(url), url
            except _Skip as err:
                last = str(err)
        raise DownloadError(f"{self.entry.name}: {last}")

    def _from_url(self, url: str) -> str:
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and self.backoff > 0:
                time.sleep(self.backoff * (attempt - 1))
            try:
                return self._get(url)
            except _Retry as err:
                reason = str(err)
        tries = f"after {self.attempts} attempt{'s' if self.attempts > 1 else ''}"
        kept = os.fstat(self.fd).st_size
        if kept:
            raise _Skip(f"{reason} ({tries}); kept the {kept} bytes received in {self.partial}: "
                        f"run the same command again to resume")
        raise _Skip(f"{reason} ({tries})")

    def _get(self, url: str) -> str:
        """One request for the rest of the file; "resumed" when it appended to bytes already there."""
        fd = self.fd
        while True:
            have = os.fstat(fd).st_size
            try:
                with self.client.stream("GET", url, headers={"Range": f"bytes={have}-"} if have else {}) as resp:
                    if resp.status_code == 416 and have:
                        if _content_range(resp)[1] == have:  # an earlier run got it all but stopped there
                            os.fsync(fd)
                            return "resumed"
                        os.ftruncate(fd, 0)  # the file on the server is shorter now: start again
                        continue
                    self._check(url, resp)
                    if resp.status_code == 206 and have:
                        start, total = _content_range(resp)
                    else:
                        start, total = 0, _length(resp)
                    if start != have:
                        os.ftruncate(fd, 0)  # the server ignored Range (200) or sent another range
                        if start != 0:
                            continue
                    self._show(total, start)
                    for chunk in resp.iter_raw():  # no chunk_size: its buffer would lose bytes at a drop
                        _write_chunk(fd, chunk)
                        if self.progress is not None:
                            self.progress.advance(self.task, len(chunk))
            except httpx.HTTPError as err:
                raise _failure(err, url, self.timeout) from None
            if total is not None and os.fstat(fd).st_size < total:
                raise _Retry(f"the connection to {_netloc(str(resp.url))} dropped")  # closed early, no error
            os.fsync(fd)
            return "resumed" if start else "downloaded"

    def _show(self, total: int | None, start: int) -> None:
        if self.progress is None:
            return
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(self.entry.name, total=total, completed=start)
        else:  # reset, not update: a resume's jump is no speed
            self.progress.reset(self.task, total=total, completed=start)

    def _check(self, url: str, resp: httpx.Response) -> None:
        status = f"{resp.status_code} {resp.reason_phrase}".strip()
        proxy = _proxy_variable(url)
        if resp.status_code in (200, 206):
            if resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/html":
                raise _Skip(f"{resp.url.netloc.decode()} returned a web page instead of the file (a sign-in, "
                            f"quota or virus-scan page); download it by hand from {self.entry.page or url} "
                            f"into {self.final}")
            return
        if resp.status_code == 407 and proxy:
            raise _Skip(f"the proxy refused the connection ({status}); check {proxy}")
        if resp.status_code == 403 and proxy:
            raise _Skip(f"{url}: {status} (from the server or from the proxy in {proxy})")
        if resp.status_code in RETRY_STATUS:
            raise _Retry(f"{url}: {status}")
        raise _Skip(f"{url}: {status}")


def _failure(err: httpx.HTTPError, url: str, timeout: float) -> Exception:
    """An httpx error as one line, and whether asking again may help."""
    try:
        failed = str(err.request.url)  # after redirects: the host that actually failed
    except RuntimeError:
        failed = url
    where, proxy = _netloc(failed), _proxy_variable(failed)
    reason = re.sub(r"^\[Errno -?\d+\]\s*", "", first_line(err))  # "[Errno 111] Connection refused"
    answered_nothing = isinstance(err, httpx.RemoteProtocolError) and "without sending a response" in str(err)
    if isinstance(err, httpx.ProxyError):
        return _Skip(f"the proxy refused the connection ({reason}); check {proxy or 'HTTPS_PROXY'}")
    if proxy and (isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout)) or answered_nothing):
        # the TCP connection and the first answer are the proxy's, not the server's
        why = "it closed the connection without answering" if answered_nothing else reason
        return _Skip(f"the proxy refused the connection ({why}); check {proxy}")
    if isinstance(err, httpx.ConnectError):
        return _Skip(f"cannot connect to {where} ({reason})")
    if isinstance(err, httpx.ConnectTimeout):
        return _Retry(f"cannot connect to {where} (no answer within {timeout:g} s)")
    if isinstance(err, httpx.TimeoutException):
        return _Retry(f"{where} sent nothing for {timeout:g} s")
    if isinstance(err, httpx.RemoteProtocolError):
        return _Retry(f"the connection to {where} dropped")
    if isinstance(err, (httpx.ReadError, httpx.WriteError)):
        return _Retry(f"the connection to {where} dropped ({reason})")
    return _Skip(f"{url}: {reason}")


def _proxy_variable(url: str) -> str | None:
    """The variable naming the proxy httpx takes for `url` (only to word errors; never its value,
    which may hold a password)."""
    found = urllib.request.getproxies()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    variable = f"{scheme.upper()}_PROXY" if found.get(scheme) else "ALL_PROXY" if found.get("all") else None
    host = (parts.hostname or "").lower()
    for pattern in (p.strip().lower() for p in found.get("no", "").split(",")):
        if pattern == "*" or (pattern and (host == pattern.lstrip(".") or host.endswith("." + pattern.lstrip(".")))):
            return None
    return variable


def _netloc(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]  # host[:port], never credentials


def _length(resp: httpx.Response) -> int | None:
    value = resp.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def _content_range(resp: httpx.Response) -> tuple[int, int | None]:
    """(first byte, total) of a 206 or 416; a 206 without a readable one counts as a restart."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("content-range", "").strip())
    if not match:
        return -1, None
    total = match[2]
    return int(match[1] or 0), None if total == "*" else int(total)


@contextmanager
def _local(entry: Entry, folder: Path, *leftovers: Path):
    """OSErrors of local files as one line; a full disk deletes `leftovers`, so nothing half
    written stays behind."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            for path in leftovers:
                _unlink(path)
            raise DownloadError(f"{entry.name}: disk full while writing {folder}: {err.strerror or err}") from None
        where = err.filename or folder
        raise DownloadError(f"{entry.name}: cannot write {where}: {err.strerror or err}") from None


def _claim(entry: Entry, partial: Path) -> int:
    """Open (creating) the partial, locked: two fetches appending to one file would garble it."""
    fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if isinstance(err, BlockingIOError):
                raise  # held by another fetch; other errors: a file system without locks (some NFS)
        if not _same_file(fd, partial):  # its holder renamed it into place between our open and lock
            raise BlockingIOError(errno.EAGAIN, "renamed")
    except OSError as err:
        os.close(fd)
        if isinstance(err, BlockingIOError):
            raise DownloadError(f"{entry.name}: another process is downloading {partial}") from None
        raise
    return fd


def _release(fd: int, partial: Path) -> None:
    """Unlock; an empty partial (a 404, a web page) is no progress worth keeping."""
    if _same_file(fd, partial) and os.fstat(fd).st_size == 0:
        _unlink(partial)
    os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
    except OSError:
        return False


def _pin(entry: Entry, folder: Path, sha256: str, console) -> bool:
    """Record the file's sha256 in SHA256SUMS; True when that pins what the registry does not state."""
    known = pins(folder)
    if known.get(entry.file) == sha256:
        return False
    known[entry.file] = sha256
    with _local(entry, folder):
        write_file(folder / SUMS, "".join(f"{h}  {n}\n" for n, h in sorted(known.items())).encode())
    if entry.sha256:
        return False
    if console is not None:
        console.print(f"{entry.name}: sha256 {sha256} (the registry states none; pinned in {folder / SUMS})",
                      markup=False, highlight=False, soft_wrap=True)
    return True


@contextmanager
def _progress(console):
    """rich progress bars (bytes, speed, ETA) on `console`; None without one."""
    if console is None:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        TimeRemainingColumn(), console=console)
    try:
        yield progress  # started at the first answer: a failed connection leaves no empty bar
    finally:
        if progress.live.is_started:  # stopping an unstarted bar would print an empty line
            progress.stop()
