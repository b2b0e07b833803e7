"""An HTTP file server on 127.0.0.1 that misbehaves on request, for download tests.

`file_server` (a pytest fixture) serves in-memory files by path with real Range support (206,
Content-Range, 416) and, per path, the faults a download meets in the wild: a connection dropped
after N bytes (on the first K requests), wrong bytes, a status such as 404, a slow answer, an HTML
page where a binary was expected (Google Drive's quota page), a server that ignores Range. Every
request's path and Range header is recorded, so a test can check what a resume asked for.
`refusing_proxy` is a stand-in proxy that answers everything, CONNECT included, with 403, or
closes the connection without answering.

Use: `from tests.http_faults import file_server  # noqa: F401` in the test module.
"""

from __future__ import annotations

import re
import socketserver
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

WEB_PAGE = b"<!DOCTYPE html><html><body>Google Drive - Quota exceeded</body></html>"


@dataclass
class Fault:
    drop_after: int | None = None   # close the connection after this many body bytes ...
    drop_times: int | None = None   # ... on the first K requests for the path (None: on every one)
    wrong_bytes: bool = False       # serve other bytes of the same length
    status: int | None = None       # answer this status (e.g. 404) instead of the file
    slow: float = 0.0               # seconds to sleep before each chunk
    html: bool = False              # answer 200 with a web page
    ignore_range: bool = False      # always 200 with the whole file


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    headers: dict       # lower-case names


class FileServer:
    """The state a test sets (files, faults) and reads (requests)."""

    chunk = 16 * 1024

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.netloc = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def add(self, path: str, data: bytes, **fault) -> str:
        """Serve `data` at `path` with the given faults (Fault's fields); return its URL."""
        self.files[path] = data
        self.faults[path] = Fault(**fault)
        return self.url(path)

    def url(self, path: str) -> str:
        return self.base + path

    def ranges(self, path: str) -> list[str | None]:
        return [r.range for r in self.requests if r.path == path]

    def _record(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
            return sum(1 for r in self.requests if r.path == request.path)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass  # no access log in test output

    def do_GET(self) -> None:
        state: FileServer = self.server.state
        path = self.path.split("?")[0]
        asked = self.headers.get("Range")
        nth = state._record(Request("GET", path, asked, {k.lower(): v for k, v in self.headers.items()}))
        if path not in state.files:
            return self._status(404)
        data, fault = state.files[path], state.faults[path]
        if fault.status:
            return self._status(fault.status)
        if fault.html:
            return self._send(200, WEB_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        if fault.wrong_bytes:
            data = bytes(b ^ 0xFF for b in data)
        start, headers, code = 0, {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}, 200
        match = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if match and not fault.ignore_range:
            start = int(match[1])
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            code, headers["Content-Range"] = 206, f"bytes {start}-{len(data) - 1}/{len(data)}"
        dropping = fault.drop_after is not None and (fault.drop_times is None or nth <= fault.drop_times)
        self._send(code, data[start:], headers, drop_after=fault.drop_after if dropping else None, slow=fault.slow)

    def _status(self, code: int) -> None:
        self._send(code, b"", {})

    def _send(self, code: int, body: bytes, headers: dict, drop_after: int | None = None, slow: float = 0.0) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))  # the whole body, even when dropping early
        self.end_headers()
        if drop_after is not None:
            body = body[:drop_after]
            self.close_connection = True
        try:
            for at in range(0, len(body), FileServer.chunk):
                if slow:
                    time.sleep(slow)
                self.wfile.write(body[at:at + FileServer.chunk])
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (a timeout test): nothing to report


@pytest.fixture
def file_server():
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


class _ProxyHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):
            pass  # the rest of the request head
        self.server.seen.append(line.decode("latin-1").strip())
        if self.server.mode == "403":
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        # "close": return without a word; the connection closes with the handler


class RefusingProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self, mode: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.mode, self.seen = mode, []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def refusing_proxy():
    """A factory: refusing_proxy("403" | "close") -> a running RefusingProxy (`.url`, `.seen`)."""
    started = []

    def start(mode: str) -> RefusingProxy:
        proxy = RefusingProxy(mode)
        thread = threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        started.append((proxy, thread))
        return proxy

    try:
        yield start
    finally:
        for proxy, thread in started:
            proxy.shutdown()
            proxy.server_close()
            thread.join(timeout=5)
