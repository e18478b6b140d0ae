"""A loopback HTTP file server with ``Range`` support (206 Partial Content) for the tests.

It serves a fixed set of files under ``/<name>``, counts the body bytes and requests it sent,
and can be told to ignore ``Range`` (answer 200 with the whole file, as a plain static server
does) to test that the reader refuses such servers.

    with RangeServer({"simple.copc.laz": path}) as srv:
        url = srv.url("simple.copc.laz")
        ...
        srv.bytes_sent, srv.requests
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: bytes, headers: dict | None = None, head: bool = False) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"test-etag"')
        self.end_headers()
        if not head:
            # counted before the body goes out: a client that has read it may check the counts
            # at once, before this thread would have counted after the write
            self.server.count(len(body), self.headers.get("Range"))
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self.server.files.get(self.path.split("?", 1)[0].lstrip("/"))
        if path is None:
            self._send(404, b"not found", head=head)
            return
        data = Path(path).read_bytes()
        rng = self.headers.get("Range")
        if rng is None or self.server.ignore_range:
            self._send(200, data, {"Accept-Ranges": "none" if self.server.ignore_range else "bytes"}, head)
            return
        m = _RANGE.match(rng.strip())
        size = len(data)
        if not m or (not m.group(1) and not m.group(2)):
            self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head)
            return
        if m.group(1):
            a = int(m.group(1))
            b = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last N bytes
            a, b = max(size - int(m.group(2)), 0), size - 1
        if a >= size or b < a:
            self._send(416, b"", {"Content-Range": f"bytes */{size}"}, head)
            return
        self._send(206, data[a:b + 1], {"Content-Range": f"bytes {a}-{b}/{size}", "Accept-Ranges": "bytes"}, head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: dict[str, Path], ignore_range: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.ignore_range = {k: Path(v) for k, v in files.items()}, ignore_range
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.requests = 0
        self.ranges: list[str | None] = []

    def count(self, nbytes: int, rng: str | None) -> None:
        with self._lock:
            self.bytes_sent += nbytes
            self.requests += 1
            self.ranges.append(rng)


class RangeServer:
    """Context manager: a :class:`ThreadingHTTPServer` on 127.0.0.1 (a free port) in a thread."""

    def __init__(self, files: dict[str, Path], ignore_range: bool = False):
        self._srv = _Server(files, ignore_range)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)

    def url(self, name: str) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}/{name}"

    @property
    def bytes_sent(self) -> int:
        return self._srv.bytes_sent

    @property
    def requests(self) -> int:
        return self._srv.requests

    def reset(self) -> None:
        with self._srv._lock:
            self._srv.bytes_sent = self._srv.requests = 0
            self._srv.ranges.clear()
