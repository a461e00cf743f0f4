"""moto's S3 server with R2's atomic conditional writes: `python -m rp_devstack.s3_server`.

R2 (like S3) applies `PutObject`/`DeleteObject` with `If-Match` / `If-None-Match` atomically:
of two writers holding the same ETag exactly one wins, the other gets 412. moto checks the
condition and stores the object in two steps on a threaded server, so two racing writers can both
pass the check. Warm-pod adoption claims a lease object with `If-Match`; on the devstack that
claim must be as exclusive as on R2, so conditional writes are serialised here. Unconditional
requests (uploads, reads) stay concurrent.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

CONDITIONAL_HEADERS = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH")
WRITE_METHODS = ("PUT", "POST", "DELETE")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class AtomicConditionalWrites:
    """WSGI middleware: one conditional write at a time, check and store under one lock."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # `request` is the WSGI environ: the HTTP request, not process environment variables.
        conditional = request.get("REQUEST_METHOD") in WRITE_METHODS and any(
            request.get(h) for h in CONDITIONAL_HEADERS
        )
        if not conditional:
            return self.app(request, start_response)
        with self._lock:
            # Drain the answer inside the lock: moto may do the work lazily while iterating.
            return [b"".join(self.app(request, start_response))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds some URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        AtomicConditionalWrites(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
