"""The emulator's HTTP server: routes GraphQL and the admin API onto one `EmulatorState`."""

from __future__ import annotations

import atexit
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from rp_devstack.local_pods import ComfyCommand, standin_command
from rp_devstack.runpod_emulator import graphql_api
from rp_devstack.runpod_emulator.state import DEFAULT_API_KEY, EmulatorState

log = logging.getLogger(__name__)


class RunPodEmulator(EmulatorState):
    """The emulator in this process: HTTP server on a thread, pods as child process groups."""

    def __init__(
        self,
        state_dir: str | Path,
        api_key: str = DEFAULT_API_KEY,
        *,
        port: int = 0,
        boot_delay_s: float = 1.0,
        stock_per_datacenter: int = 8,
        secrets_store: dict[str, str] | None = None,
        comfy_command: ComfyCommand = standin_command,
        agent_grace_s: float = 15.0,
    ) -> None:
        super().__init__(
            state_dir,
            api_key,
            boot_delay_s=boot_delay_s,
            stock_per_datacenter=stock_per_datacenter,
            secrets_store=secrets_store,
            comfy_command=comfy_command,
            agent_grace_s=agent_grace_s,
        )
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # the key stays out of reprs
        return f"RunPodEmulator(base_url={self.base_url!r}, pods={len(self._pods)})"

    @property
    def base_url(self) -> str:
        if self._server is None:
            return "(not started)"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> RunPodEmulator:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="runpod-emulator", daemon=True
        )
        self._thread.start()
        atexit.register(self.stop)
        log.info("RunPod emulator on %s (state %s)", self.base_url, self.state_dir)
        return self

    def stop(self) -> None:
        """Stop the server and every pod process. Safe to call twice (atexit calls it too)."""
        self.stop_every_pod()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def execute(self, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
        return graphql_api.execute(self, query, variables)


class _Handler(BaseHTTPRequestHandler):
    emulator: RunPodEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/_emulator/pods":
            self._json(200, self.emulator.pods())
        elif path == "/_emulator/billing":
            self._json(200, self.emulator.billing())
        elif path == "/_emulator/health":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/_emulator/"):
            self._admin(url.path, raw)
            return
        if url.path != "/graphql":
            self._json(404, {"error": f"no route {url.path}"})
            return
        query_key = next(iter(parse_qs(url.query).get("api_key", [])), None)
        header = self.headers.get("Authorization")
        scope = None  # None: the account's key; else the pod a pod-scoped key belongs to
        if not self.emulator.authorized(header, query_key):
            scope = self.emulator.pod_scope(header, query_key)
            if scope is None:
                self._text(401, "401 Unauthorized")
                return
        try:
            payload = json.loads(raw or b"{}")
            query = payload["query"]
        except (ValueError, KeyError):
            self._json(400, {"errors": [{"message": "Must provide query string."}]})
            return
        fault = self.emulator.take_fault(graphql_api.operation_name(query))
        if fault and fault.mode == "5xx":
            self._text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if scope is not None:
            body = graphql_api.execute_for_pod(
                self.emulator, scope, query, payload.get("variables")
            )
        else:
            body = self.emulator.execute(query, payload.get("variables"))
        if fault and fault.mode == "hang":
            time.sleep(fault.hang_seconds)
        self._json(200, body)

    def _admin(self, path: str, raw: bytes) -> None:
        e = self.emulator
        args = json.loads(raw or b"{}")
        try:
            if path == "/_emulator/faults":
                e.fail_next(
                    int(args.get("count", 1)),
                    args.get("mode", "5xx"),
                    args.get("operation"),
                    float(args.get("hang_seconds", 5.0)),
                )
            elif path == "/_emulator/stock":
                e.set_stock(args["gpu_type_id"], int(args["count"]), args.get("datacenter"))
            elif path == "/_emulator/boot_delay":
                e.set_boot_delay(float(args["seconds"]))
            elif path == "/_emulator/reset":
                e.reset()
            elif m := re.fullmatch(r"/_emulator/pods/([^/]+)/crash", path):
                e.crash_pod(m.group(1))
            else:
                self._json(404, {"error": f"no route {path}"})
                return
        except (KeyError, ValueError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"ok": True})

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        self._send(status, text.encode(), content_type)

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a "hang" fault outlived its timeout)
