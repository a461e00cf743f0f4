"""A local stand-in for the model hub (Hugging Face / CivitAI) that download_models.sh talks to.

It serves files from memory over real HTTP on a free loopback port and behaves like the real hub
where the downloader relies on it:
- a Hugging Face resolve URL (`/<repo>/resolve/<rev>/<path>`) of an LFS file answers GET and
  HEAD with a 302 to the CDN on another host (here `localhost` instead of `127.0.0.1`), carrying
  `X-Linked-Etag: "<sha256>"` and `X-Linked-Size`, as huggingface.co does;
- `Range: bytes=a-b` / `bytes=a-` answered with 206 + Content-Range, 416 past the end.
It can misbehave on demand: cut a response short, ignore Range, answer with an error status,
advertise a digest that does not match the body. Every request is recorded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class HubFile:
    content: bytes
    # Drop the connection once byte `cut_at` of the file is reached (it is not sent), for the
    # first `cut_times` responses whose range covers it.
    cut_at: int | None = None
    cut_times: int = 1
    ignore_range: bool = False
    status: int | None = None
    # Seconds to pause after each 64 KiB, to keep a transfer in flight.
    chunk_delay: float = 0.0
    # The sha256 the hub advertises (X-Linked-Etag); None = the body's real one.
    etag: str | None = None
    # False: served directly (CivitAI, plain URLs, small non-LFS files).
    lfs: bool = True


@dataclass
class HubRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None
    host: str | None


@dataclass
class ModelHub:
    base_url: str
    port: int = 0
    files: dict[str, HubFile] = field(default_factory=dict)
    json_docs: dict[str, bytes] = field(default_factory=dict)
    requests: list[HubRequest] = field(default_factory=list)
    # Bodies being sent right now, and the most at once: shows parallel streams.
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, path: str, content: bytes, **behaviour: object) -> HubFile:
        if not path.startswith("/") or "/resolve/" not in path:
            behaviour.setdefault("lfs", False)
        hub_file = HubFile(content, **behaviour)  # type: ignore[arg-type]
        self.files[path] = hub_file
        return hub_file

    def requests_for(self, path: str, method: str | None = None) -> list[HubRequest]:
        cdn = self.cdn_path(path) if path in self.files else None
        return [
            r
            for r in self.requests
            if r.path in (path, cdn) and (method is None or r.method == method)
        ]

    def served_ranges(self, path: str) -> list[str | None]:
        """Range headers of the GETs that reached the file's bytes (the CDN for an LFS file)."""
        body_path = self.cdn_path(path) if self.files[path].lfs else path
        return [r.range for r in self.requests if r.path == body_path and r.method == "GET"]

    def cdn_path(self, path: str) -> str:
        return "/cdn/" + hashlib.sha256(self.files[path].content).hexdigest() + path[-12:]


def _handler(hub: ModelHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            range_header = self.headers.get("Range")
            hub.requests.append(
                HubRequest(
                    self.command,
                    self.path,
                    range_header,
                    self.headers.get("Authorization"),
                    self.headers.get("Host"),
                )
            )
            if self.path in hub.json_docs:
                self._body(200, hub.json_docs[self.path], head, "application/json")
                return
            cdn = {hub.cdn_path(p): p for p in hub.files}
            hub_path = cdn.get(self.path, self.path)
            hub_file = hub.files.get(hub_path)
            if hub_file is None:
                self._body(404, b"", head)
                return
            if hub_file.status is not None:
                self._body(hub_file.status, b"", head)
                return
            digest = hub_file.etag or hashlib.sha256(hub_file.content).hexdigest()
            if hub_file.lfs and self.path == hub_path:
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{hub.port}{hub.cdn_path(hub_path)}")
                self.send_header("X-Linked-Etag", f'"{digest}"')
                self.send_header("X-Linked-Size", str(len(hub_file.content)))
                self.send_header("ETag", '"0123456789abcdef0123456789abcdef01234567"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._file(hub_file, range_header, head, digest)

        def _file(self, hub_file: HubFile, range_header: str | None, head: bool, digest: str):
            content = hub_file.content
            start, end = 0, len(content) - 1
            if range_header and not hub_file.ignore_range:
                first, _, last = range_header.removeprefix("bytes=").partition("-")
                start = int(first)
                end = min(int(last), len(content) - 1) if last else len(content) - 1
                if start >= len(content):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(content)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(content)}")
            else:
                self.send_response(200)
            body = content[start : end + 1]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{digest}"')
            self.end_headers()
            if head:
                return
            with hub.lock:
                hub.in_flight += 1
                hub.max_in_flight = max(hub.max_in_flight, hub.in_flight)
            try:
                self._send(hub_file, body, start, end)
            finally:
                with hub.lock:
                    hub.in_flight -= 1

        def _send(self, hub_file: HubFile, body: bytes, start: int, end: int) -> None:
            cut = hub_file.cut_at
            if cut is not None and hub_file.cut_times > 0 and start <= cut <= end:
                hub_file.cut_times -= 1
                self.wfile.write(body[: cut - start])
                self.wfile.flush()
                self.close_connection = True
                return
            if hub_file.chunk_delay:
                for offset in range(0, len(body), 65536):
                    self.wfile.write(body[offset : offset + 65536])
                    self.wfile.flush()
                    time.sleep(hub_file.chunk_delay)
                return
            self.wfile.write(body)

        def _body(self, status: int, body: bytes, head: bool, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler


@pytest.fixture
def model_hub() -> Iterator[ModelHub]:
    hub = ModelHub(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.port = server.server_address[1]
    hub.base_url = f"http://127.0.0.1:{hub.port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
