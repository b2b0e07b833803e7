"""`synthfer.models.fetch`: downloads that resume, verify, pin, and fail in one line.

Every test talks to a real HTTP server on 127.0.0.1 (tests/http_faults.py) that injects the
fault under test; registry entries are built here and point at it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import random
import socket
import zipfile

import pytest
from rich.console import Console

from synthfer.errors import DownloadError, UsageError
from synthfer.models import catalog, fetch as fetch_module
from synthfer.models.fetch import fetch, pins
from tests.http_faults import Fault, file_server, refusing_proxy  # noqa: F401  (fixtures)

DATA = random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
OTHER_SHA = hashlib.sha256(bytes(b ^ 0xFF for b in DATA)).hexdigest()  # what wrong_bytes serves
BLOB = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def entry(*urls: str, **fields) -> catalog.Entry:
    base = dict(name="net", role="va", title="a test network", file="net.bin", urls=list(urls), licence="MIT",
                commercial=True, recipe={"kind": "onnx", "path": "registry:net"}, sources=["test"])
    return catalog.Entry(**(base | fields))


def get(item, folder, **kw):
    return fetch(item, folder, backoff=0, **kw)


def listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_download_checked_against_the_stated_sha256(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    got = get(entry(url, sha256=SHA, size=len(DATA)), tmp_path / "models")
    assert (got.name, got.sha256, got.size, got.action, got.pinned) == ("net", SHA, len(DATA), "downloaded", False)
    assert got.path == tmp_path / "models" / "net.bin" and got.path.read_bytes() == DATA
    assert (tmp_path / "models" / "SHA256SUMS").read_text() == f"{SHA}  net.bin\n"
    assert listing(tmp_path / "models") == {"net.bin", "SHA256SUMS"}
    sent = file_server.requests[0].headers
    assert sent["user-agent"].startswith("synthfer/0.1.0 ") and sent["accept-encoding"] == "identity"


def test_no_stated_hash_pins_and_prints_it_then_the_file_is_already_there(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    out = io.StringIO()
    got = get(entry(url), tmp_path, console=Console(file=out, width=300))
    assert (got.action, got.pinned) == ("downloaded", True)
    assert f"net: sha256 {SHA} (the registry states none; pinned in {tmp_path / 'SHA256SUMS'})\n" in out.getvalue()
    assert pins(tmp_path) == {"net.bin": SHA}
    again = get(entry(url), tmp_path)
    assert (again.action, again.pinned, again.sha256) == ("already there", False, SHA)
    assert len(file_server.requests) == 1


def test_sha256sums_keeps_other_pins_sorted(file_server, tmp_path):
    (tmp_path / "SHA256SUMS").write_text(f"{'b' * 64}  zz.onnx\n{'A' * 64} *aa.pt\n")
    get(entry(file_server.add("/net.bin", DATA)), tmp_path)
    assert (tmp_path / "SHA256SUMS").read_text() == f"{'a' * 64}  aa.pt\n{SHA}  net.bin\n{'b' * 64}  zz.onnx\n"


def test_git_blob_sha1_passes(file_server, tmp_path):
    got = get(entry(file_server.add("/net.bin", DATA), git_blob_sha1=BLOB), tmp_path)
    assert got.path.read_bytes() == DATA and got.pinned


def test_git_blob_sha1_mismatch_deletes_the_download(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    with pytest.raises(DownloadError) as err:
        get(entry(url, git_blob_sha1="0" * 40), tmp_path)
    assert str(err.value) == (f"net: {url}: got git blob sha1 {BLOB} where the registry states {'0' * 40}; "
                              f"deleted the download")
    assert listing(tmp_path) == set()


def test_sha256_mismatch_leaves_nothing(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, wrong_bytes=True)
    with pytest.raises(DownloadError) as err:
        get(entry(url, sha256=SHA), tmp_path)
    assert str(err.value) == f"net: {url}: got sha256 {OTHER_SHA} where the registry states {SHA}; deleted the download"
    assert listing(tmp_path) == set()


def test_a_dropped_connection_resumes_with_a_range_request(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, drop_after=100_000, drop_times=1)
    got = get(entry(url, sha256=SHA), tmp_path)
    assert file_server.ranges("/net.bin") == [None, "bytes=100000-"]
    assert got.action == "resumed" and got.path.read_bytes() == DATA
    assert listing(tmp_path) == {"net.bin", "SHA256SUMS"}


def test_when_every_attempt_drops_the_partial_is_kept_and_the_next_run_resumes(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, drop_after=100_000)
    partial = tmp_path / ".net.bin.partial"
    with pytest.raises(DownloadError) as err:
        get(entry(url, sha256=SHA), tmp_path, attempts=2)
    assert str(err.value) == (f"net: the connection to {file_server.netloc} dropped (after 2 attempts); kept the "
                              f"200000 bytes received in {partial}: run the same command again to resume")
    assert partial.read_bytes() == DATA[:200_000] and listing(tmp_path) == {".net.bin.partial"}

    file_server.faults["/net.bin"] = Fault()
    got = get(entry(url, sha256=SHA), tmp_path)
    assert file_server.ranges("/net.bin")[-1] == "bytes=200000-"
    assert got.action == "resumed" and got.path.read_bytes() == DATA
    assert listing(tmp_path) == {"net.bin", "SHA256SUMS"}


def test_a_complete_partial_from_an_earlier_run_is_used(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    (tmp_path / ".net.bin.partial").write_bytes(DATA)
    got = get(entry(url, sha256=SHA), tmp_path)
    assert file_server.ranges("/net.bin") == [f"bytes={len(DATA)}-"]  # answered 416 */300000
    assert got.action == "resumed" and got.path.read_bytes() == DATA


def test_a_server_that_ignores_range_restarts_from_zero(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, ignore_range=True)
    (tmp_path / ".net.bin.partial").write_bytes(b"stale bytes" * 500)
    got = get(entry(url, sha256=SHA), tmp_path)
    assert file_server.ranges("/net.bin") == ["bytes=5500-"]
    assert got.action == "downloaded" and got.path.read_bytes() == DATA


def test_pin_mismatch_on_a_download(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, wrong_bytes=True)
    (tmp_path / "SHA256SUMS").write_text(f"{SHA}  net.bin\n")
    with pytest.raises(DownloadError) as err:
        get(entry(url), tmp_path)
    sums = tmp_path / "SHA256SUMS"
    assert str(err.value) == f"net: {url}: got sha256 {OTHER_SHA} where {sums} states {SHA}; deleted the download"
    assert listing(tmp_path) == {"SHA256SUMS"} and sums.read_text() == f"{SHA}  net.bin\n"


def test_a_file_on_disk_that_differs_from_its_pin_is_left_alone(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    (tmp_path / "net.bin").write_bytes(b"changed")
    changed = hashlib.sha256(b"changed").hexdigest()
    with pytest.raises(DownloadError) as err:
        get(entry(url, sha256=SHA), tmp_path)
    assert str(err.value) == (f"net: {tmp_path / 'net.bin'} differs from its pin: got sha256 {changed} where the "
                              f"registry states {SHA}; move it away to fetch it again")
    assert (tmp_path / "net.bin").read_bytes() == b"changed" and file_server.requests == []


def test_an_unpinned_file_already_there_is_pinned_without_a_request(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    (tmp_path / "net.bin").write_bytes(DATA)
    got = get(entry(url, git_blob_sha1=BLOB), tmp_path)
    assert (got.action, got.pinned, got.sha256) == ("already there", True, SHA)
    assert pins(tmp_path) == {"net.bin": SHA} and file_server.requests == []


def test_404(file_server, tmp_path):
    url = file_server.url("/missing.bin")
    with pytest.raises(DownloadError) as err:
        get(entry(url), tmp_path)
    assert str(err.value) == f"net: {url}: 404 Not Found"
    assert listing(tmp_path) == set()


def test_the_next_url_is_tried_and_the_last_error_reported(file_server, tmp_path):
    missing, url = file_server.url("/gone.bin"), file_server.add("/net.bin", DATA)
    assert get(entry(missing, url, sha256=SHA), tmp_path).path.read_bytes() == DATA
    with pytest.raises(DownloadError) as err:
        get(entry(missing, missing + "2"), tmp_path / "other")
    assert str(err.value) == f"net: {missing}2: 404 Not Found"


def test_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(DownloadError) as err:
        get(entry(f"http://127.0.0.1:{port}/net.bin"), tmp_path)
    assert str(err.value) == f"net: cannot connect to 127.0.0.1:{port} (Connection refused)"
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("mode, url, variable, reason, seen", [
    ("403", "https://weights.example.invalid/net.bin", "HTTPS_PROXY", "403 Forbidden",
     "CONNECT weights.example.invalid:443 HTTP/1.1"),
    ("close", "http://weights.example.invalid/net.bin", "HTTP_PROXY", "it closed the connection without answering",
     "GET http://weights.example.invalid/net.bin HTTP/1.1"),
])
def test_proxy_refusal(refusing_proxy, monkeypatch, tmp_path, mode, url, variable, reason, seen):
    proxy = refusing_proxy(mode)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with pytest.raises(DownloadError) as err:
        get(entry(url), tmp_path)
    assert str(err.value) == f"net: the proxy refused the connection ({reason}); check {variable}"
    assert proxy.seen == [seen] and listing(tmp_path) == set()


def test_no_proxy_bypasses_the_proxy(file_server, refusing_proxy, monkeypatch, tmp_path):
    proxy = refusing_proxy("403")
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert get(entry(file_server.add("/net.bin", DATA)), tmp_path).sha256 == SHA
    assert proxy.seen == []


def test_a_web_page_instead_of_the_file(file_server, tmp_path):
    url = file_server.add("/uc", DATA, html=True)
    with pytest.raises(DownloadError) as err:
        get(entry(url, page="https://drive.google.com/file/d/abc/view"), tmp_path)
    assert str(err.value) == (f"net: {file_server.netloc} returned a web page instead of the file (a sign-in, quota or "
                              f"virus-scan page); download it by hand from https://drive.google.com/file/d/abc/view "
                              f"into {tmp_path / 'net.bin'}")
    assert listing(tmp_path) == set()


def test_read_timeout(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA, slow=1.0)
    with pytest.raises(DownloadError) as err:
        get(entry(url), tmp_path, attempts=2, timeout=0.2)
    assert str(err.value) == f"net: {file_server.netloc} sent nothing for 0.2 s (after 2 attempts)"
    assert listing(tmp_path) == set()


def test_a_full_disk_leaves_nothing(file_server, tmp_path, monkeypatch):
    url = file_server.add("/net.bin", DATA)
    real, calls = fetch_module._write_chunk, []

    def fill_up(fd, data):
        calls.append(len(data))
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(fetch_module, "_write_chunk", fill_up)
    with pytest.raises(DownloadError) as err:
        get(entry(url), tmp_path)
    assert str(err.value) == f"net: disk full while writing {tmp_path}: No space left on device"
    assert listing(tmp_path) == set()


def test_another_fetch_of_the_same_file_is_refused(file_server, tmp_path):
    url = file_server.add("/net.bin", DATA)
    with open(tmp_path / ".net.bin.partial", "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DownloadError) as err:
            get(entry(url), tmp_path)
    assert str(err.value) == f"net: another process is downloading {tmp_path / '.net.bin.partial'}"
    assert file_server.requests == []


def test_non_commercial_needs_the_licence_accepted_before_any_request(file_server, tmp_path):
    item = entry(file_server.add("/net.bin", DATA), commercial=False, licence="CC BY-NC-ND 4.0",
                 licence_url="https://example.org/LICENSE.txt")
    with pytest.raises(UsageError) as err:
        get(item, tmp_path)
    assert err.value.exit_code == 2
    assert str(err.value) == ("net: not for commercial use (CC BY-NC-ND 4.0): read "
                              "https://example.org/LICENSE.txt, then fetch it with --accept-licence net")
    assert file_server.requests == [] and listing(tmp_path) == set()
    assert get(item, tmp_path, accept_licence=True).path.read_bytes() == DATA


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def test_zip_member_is_extracted_and_the_zip_deleted(file_server, tmp_path):
    url = file_server.add("/MODELS.zip", _zip({"models/q/net.onnx": DATA, "models/q/LICENSE.md": b"Apache-2.0"}),
                          drop_after=50_000, drop_times=1)
    got = get(entry(url, file="net.onnx", archive="zip", sha256=SHA), tmp_path)
    assert got.action == "resumed" and got.path.read_bytes() == DATA
    assert listing(tmp_path) == {"net.onnx", "SHA256SUMS"} and pins(tmp_path) == {"net.onnx": SHA}


@pytest.mark.parametrize("members, what", [
    ({"LICENSE.md": b"x"}, "no member"),
    ({"a/net.onnx": b"1", "b/net.onnx": b"2"}, "2 members (a/net.onnx, b/net.onnx)"),
])
def test_zip_without_exactly_one_such_member(file_server, tmp_path, members, what):
    url = file_server.add("/MODELS.zip", _zip(members))
    with pytest.raises(DownloadError) as err:
        get(entry(url, file="net.onnx", archive="zip"), tmp_path)
    assert str(err.value) == f"net: {url}: the zip has {what} named net.onnx; deleted the download"
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("published, served", [
    ("https://github.com/lab/nets/raw/main/weights/net_v2.bin?download=1", "/mirror/net_v2.bin"),
    ("https://drive.usercontent.google.com/download?id=abc&export=download&confirm=t", "/mirror/net.bin"),
])
def test_mirror_serves_the_published_file_name(file_server, tmp_path, published, served):
    file_server.add(served, DATA)
    got = get(entry(published, sha256=SHA), tmp_path, mirror=file_server.url("/mirror/"))
    assert got.path.read_bytes() == DATA and [r.path for r in file_server.requests] == [served]


def test_mirror_must_be_http(tmp_path):
    with pytest.raises(UsageError) as err:
        get(entry("https://example.org/net.bin"), tmp_path, mirror="/srv/models")
    assert str(err.value) == "--mirror must be an http:// or https:// URL of a folder of the files, got '/srv/models'"


def test_an_entry_from_the_models_folder_registry(file_server, tmp_path):
    url = file_server.add("/lab/net.onnx", DATA)
    (tmp_path / "registry.yaml").write_text(f"""\
lab-net:
  role: va
  title: the lab's fine-tuned estimator
  file: lab_net.onnx
  urls: ["{url}"]
  sha256: {SHA}
  licence: internal
  commercial: true
  recipe: {{kind: onnx, path: "registry:lab-net"}}
  sources: [our own training run]
""")
    got = get(catalog.get("lab-net", tmp_path), tmp_path)
    assert got.path == tmp_path / "lab_net.onnx" and got.path.read_bytes() == DATA
    assert listing(tmp_path) == {"registry.yaml", "lab_net.onnx", "SHA256SUMS"}


def test_a_damaged_sha256sums_is_reported_with_its_line(tmp_path):
    (tmp_path / "SHA256SUMS").write_text(f"{SHA}  net.bin\nnot a checksum\n")
    with pytest.raises(DownloadError) as err:
        pins(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'SHA256SUMS'}:2: not a sha256sum line "
                              f"(64 hex digits, two spaces, a file name)")


def test_a_damaged_zip_is_deleted(file_server, tmp_path):
    url = file_server.add("/MODELS.zip", b"PK\x03\x04" + bytes(1000))
    with pytest.raises(DownloadError) as err:
        get(entry(url, file="net.onnx", archive="zip"), tmp_path)
    assert str(err.value) == f"net: {url}: not a usable zip (File is not a zip file); deleted the download"
    assert listing(tmp_path) == set()
