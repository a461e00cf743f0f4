"""A local stand-in for the model hub (Hugging Face / CivitAI) that download_models.sh talks to.

It serves files from memory over real HTTP on a free loopback port, honours `Range: bytes=N-`
like the real hub, and can misbehave on demand: cut a response short, ignore Range, answer
with an error status. Every request is recorded so tests can assert what was (not) fetched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class HubFile:
    content: bytes
    # Send the full Content-Length but only this many bytes, then drop the connection,
    # for the first `cut_times` full-body responses.
    cut_at: int | None = None
    cut_times: int = 1
    ignore_range: bool = False
    status: int | None = None
    # Seconds to pause after each 64 KiB, to keep a transfer in flight.
    chunk_delay: float = 0.0


@dataclass
class HubRequest:
    path: str
    range: str | None
    authorization: str | None


@dataclass
class ModelHub:
    base_url: str
    files: dict[str, HubFile] = field(default_factory=dict)
    requests: list[HubRequest] = field(default_factory=list)

    def add(self, path: str, content: bytes, **behaviour: object) -> HubFile:
        hub_file = HubFile(content, **behaviour)  # type: ignore[arg-type]
        self.files[path] = hub_file
        return hub_file

    def requests_for(self, path: str) -> list[HubRequest]:
        return [r for r in self.requests if r.path == path]


def _handler(hub: ModelHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            hub.requests.append(
                HubRequest(self.path, range_header, self.headers.get("Authorization"))
            )
            hub_file = hub.files.get(self.path)
            if hub_file is None:
                self._empty(404)
                return
            if hub_file.status is not None:
                self._empty(hub_file.status)
                return
            content = hub_file.content
            start = 0
            if range_header and not hub_file.ignore_range:
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                if start >= len(content):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(content)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}"
                )
            else:
                self.send_response(200)
            body = content[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if hub_file.cut_at is not None and hub_file.cut_times > 0 and start == 0:
                hub_file.cut_times -= 1
                self.wfile.write(body[: hub_file.cut_at])
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

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def model_hub() -> Iterator[ModelHub]:
    hub = ModelHub(base_url="")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
