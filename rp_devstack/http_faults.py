"""An HTTP proxy in front of the S3 server that fails chosen requests: R2 errors on the devstack.

`fault_proxy.FaultProxy` cuts whole connections; this one reads each request and answers some
of them with an S3-style error instead of forwarding them, as R2 does when one part of a bucket
misbehaves (e.g. a 500 for every key under `{prefix}/_rp/` while outputs still upload):

    proxy = HttpFaultProxy("127.0.0.1", s3_port).start()
    proxy.fail("/_rp/", status=500)   # every request whose path or query names `_rp/`
    proxy.heal()                       # forward everything again
    proxy.stop()

Requests are matched on the URL-decoded path and query (a listing names its prefix in the
query). Everything else is forwarded byte for byte, headers included (the Host header too, so
the request signature still matches), and the answer comes back whole. For tests and the
devstack only: it keeps each body in memory.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

# Headers about one hop: the proxy sets its own framing on each side.
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection"}


@dataclass
class HttpFaultProxy:
    target_host: str
    target_port: int
    _rules: list[tuple[str, int, str | None, bool]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    # Requests answered with an error, by the pattern that matched.
    failed: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HttpFaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered

            def do_any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = proxy.fault_for(self.command, unquote(self.path))
                if status is not None:
                    self._answer(status, [("Content-Type", "application/xml")], _error(status))
                    return
                upstream = http.client.HTTPConnection(
                    proxy.target_host, proxy.target_port, timeout=60
                )
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP:
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    response = upstream.getresponse()
                    data = response.read()
                    headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
                    self._answer(response.status, headers, data, head=self.command == "HEAD")
                finally:
                    upstream.close()

            def _answer(
                self, status: int, headers: list[tuple[str, str]], data: bytes, head: bool = False
            ) -> None:
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("content-length", "date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="http-faults", daemon=True
        )
        self._thread.start()
        return self

    def fail(
        self, pattern: str, status: int = 500, *, method: str | None = None, exact: bool = False
    ) -> None:
        """From now on answer `status` to every request (of `method`, if given) whose decoded
        path and query contain `pattern` (equal it, with `exact`: `/bucket` is HeadBucket)."""
        with self._lock:
            self._rules.append((pattern, status, method, exact))

    def heal(self) -> None:
        with self._lock:
            self._rules.clear()

    def fault_for(self, method: str, target: str) -> int | None:
        with self._lock:
            for pattern, status, only, exact in self._rules:
                if only not in (None, method):
                    continue
                if (target == pattern) if exact else (pattern in target):
                    self.failed[pattern] = self.failed.get(pattern, 0) + 1
                    return status
        return None

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up mid-answer (a retrying SDK does) is not news


def _error(status: int) -> bytes:
    code = "InternalError" if status >= 500 else "AccessDenied"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected fault ({status})</Message></Error>"
    ).encode()
