"""The emulator's HTTP server: routes GraphQL, REST v2 and the admin API onto one state."""

from __future__ import annotations

import atexit
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from rp_devstack.runpod_emulator import graphql_api, rest_v2
from rp_devstack.runpod_emulator.contract import Operation, load_contract
from rp_devstack.runpod_emulator.errors import EmulatorError
from rp_devstack.runpod_emulator.state import DEFAULT_API_KEY, EmulatorState, Fault

log = logging.getLogger(__name__)

# POST /_emulator/faults: the JSON fields `EmulatorState.fail_next` takes, each with its type; a
# field left out (or null) keeps that method's default.
FAULT_FIELDS: dict[str, Callable[[Any], Any]] = {
    "count": int,
    "mode": str,
    "operation": str,
    "hang_seconds": float,
    "retry_after": int,
    "seconds": float,
}


class RunPodEmulator(EmulatorState):
    """The emulator in this process: HTTP server on a thread, pods as child process groups."""

    def __init__(
        self,
        state_dir: str | Path,
        api_key: str = DEFAULT_API_KEY,
        *,
        port: int = 0,
        **options: Any,
    ) -> None:
        """`options` are `EmulatorState`'s (boot_delay_s, secrets_store, agent_grace_s...)."""
        super().__init__(state_dir, api_key, **options)
        self._port = port
        self.contract = load_contract()
        self.rest = rest_v2.RestV2(self, self.contract)
        # Answers that broke the REST v2 document (tests assert this stays empty).
        self.contract_violations: list[str] = []
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


# What a pod's own key may do over REST v2: read, act on (stop, terminate...) and delete its pod.
POD_KEY_ROUTES = frozenset({"/v2/pods/{id}", "/v2/pods/{id}/action", "/v2/pods/{id}/logs"})


class _Handler(BaseHTTPRequestHandler):
    emulator: RunPodEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/_emulator/"):
            self._admin(method, url.path, raw)
        elif url.path == "/graphql" and method == "POST":
            self._graphql(url.query, raw)
        elif url.path.startswith("/v2/"):
            self._rest(method, url.path, parse_qs(url.query), raw)
        else:
            self._json(404, {"error": f"no route {method} {url.path}"})

    # ------------------------------------------------------------------ GraphQL

    def _graphql(self, query_string: str, raw: bytes) -> None:
        self.emulator.count_request("POST /graphql")
        query_key = next(iter(parse_qs(query_string).get("api_key", [])), None)
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
        fault = self.emulator.take_fault(*graphql_api.operation_names(query))
        if fault and fault.mode == "5xx":
            self._text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if fault and fault.mode == "429":
            self._send(
                429, b"Too Many Requests", "text/plain", {"Retry-After": str(fault.retry_after)}
            )
            return
        if scope is not None:
            body = graphql_api.execute_for_pod(
                self.emulator, scope, query, payload.get("variables")
            )
        else:
            body = self.emulator.execute(query, payload.get("variables"))
        if fault and self._after_effect(fault):
            return
        self._json(200, body)

    # ------------------------------------------------------------------ REST v2

    def _rest(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        e = self.emulator
        op = e.contract.match(method, path)
        e.count_request(f"{method} {op.template if op else path}")
        header = self.headers.get("Authorization")
        if not e.authorized(header, None):
            scope = e.pod_scope(header, None)
            if scope is None:
                missing = not (header or "").strip()
                detail = "missing bearer token" if missing else "invalid bearer token"
                self._answer(rest_v2.problem(401, detail))
                return
            if op is None or op.template not in POD_KEY_ROUTES or op.path_params["id"] != scope:
                self._answer(rest_v2.problem(403, f"this API key is limited to pod {scope}"))
                return
        if op is None:
            allowed = e.contract.allowed_methods(path)
            if allowed:
                answer = rest_v2.problem(405, f"{method} is not allowed on {path}")
                answer.headers["Allow"] = ", ".join(allowed)
            else:
                answer = rest_v2.problem(404, f"no route {path}")
            self._answer(answer)
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._answer(rest_v2.problem(400, "request body is not valid JSON"))
            return
        refused = e.rest.validate(op, query, body)
        if refused is not None:
            self._answer(refused, op)
            return
        fault = e.take_fault(rest_v2.logical_name(op, body), op.operation_id)
        if fault and fault.mode == "5xx":
            self._text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if fault and fault.mode == "429":
            answer = rest_v2.problem(429, "rate limit exceeded for the minute window")
            answer.headers["Retry-After"] = str(fault.retry_after)
            self._answer(answer, op)
            return
        answer = e.rest.serve(op, query, body)
        if fault and self._after_effect(fault):
            return
        self._answer(answer, op)

    def _answer(self, answer: rest_v2.Answer, op: Operation | None = None) -> None:
        """Send a v2 answer, after checking it against the document."""
        if op is not None:
            violations = self.emulator.contract.response_errors(
                op, answer.status, answer.content_type, answer.body
            )
            if violations:
                self.emulator.contract_violations.append(
                    f"{op.operation_id} {answer.status}: {'; '.join(violations)}"
                )
                log.error("emulator answer breaks the REST v2 contract: %s", violations)
                answer = rest_v2.problem(500, "emulator answer breaks the contract", violations)
        headers = {**RATE_LIMIT_HEADERS, **answer.headers}
        if answer.stream is not None:
            self._stream(answer, headers)
        elif answer.body is None:
            self._send(answer.status, b"", None, headers)
        else:
            data = json.dumps(answer.body).encode()
            self._send(answer.status, data, answer.content_type, headers)

    def _stream(self, answer: rest_v2.Answer, headers: dict[str, str]) -> None:
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "keep-alive")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            for chunk in answer.stream or iter(()):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the reader had enough lines and hung up

    def _after_effect(self, fault: Fault) -> bool:
        """Faults that strike after the call took effect; True when no answer must be sent."""
        if fault.mode == "hang":
            time.sleep(fault.hang_seconds)
        elif fault.mode == "lose":
            # The side effect happened; the answer is lost: close without a status line.
            self.close_connection = True
            return True
        return False

    # ------------------------------------------------------------------ admin

    def _admin(self, method: str, path: str, raw: bytes) -> None:
        e = self.emulator
        if method == "GET":
            views: dict[str, Callable[[], Any]] = {
                "/_emulator/pods": e.pods,
                "/_emulator/billing": e.billing,
                "/_emulator/requests": e.request_counts,
                "/_emulator/contract_violations": lambda: list(e.contract_violations),
                "/_emulator/health": lambda: {"ok": True},
                "/_emulator/gpu_types": e.gpu_types,
            }
            view = views.get(path)
            if view is None:
                self._json(404, {"error": f"no route {path}"})
            else:
                self._json(200, view())
            return
        args = json.loads(raw or b"{}")
        try:
            if path == "/_emulator/faults":
                given = {k: args[k] for k in FAULT_FIELDS if args.get(k) is not None}
                e.fail_next(**{k: FAULT_FIELDS[k](v) for k, v in given.items()})
            elif path == "/_emulator/stock":
                e.set_stock(
                    args["gpu_type_id"],
                    int(args["count"]),
                    args.get("datacenter"),
                    seconds=_optional_float(args.get("seconds")),
                    after_s=_optional_float(args.get("after_s")),
                )
            elif path == "/_emulator/gpu_types":
                e.set_gpu_offer(
                    args["gpu_type_id"],
                    secure_price=_optional_float(args.get("secure_price")),
                    step_seconds=_optional_float(args.get("step_seconds")),
                )
            elif path == "/_emulator/boot_delay":
                e.set_boot_delay(float(args["seconds"]))
            elif path == "/_emulator/api_key":
                e.revoke_api_key(bool(args.get("revoked", True)))
            elif path == "/_emulator/reset":
                e.reset()
            elif path == "/_emulator/requests/reset":
                e.reset_request_counts()
            elif m := re.fullmatch(r"/_emulator/pods/([^/]+)/crash", path):
                e.crash_pod(m.group(1))
            elif m := re.fullmatch(r"/_emulator/pods/([^/]+)/preempt", path):
                e.preempt_pod(m.group(1))
            elif path == "/_emulator/preemption":
                seed = args.get("seed")
                e.set_preemption_rate(
                    float(args["rate_per_hour"]), None if seed is None else int(seed)
                )
            elif m := re.fullmatch(r"/_emulator/pods/([^/]+)/error", path):
                e.error_pod(m.group(1), args.get("reason") or "container failed to start")
            else:
                self._json(404, {"error": f"no route {path}"})
                return
        except (KeyError, ValueError) as exc:
            self._json(400, {"error": str(exc)})
            return
        except EmulatorError as exc:
            self._json(exc.status, {"error": exc.message})
            return
        self._json(200, {"ok": True})

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        self._send(status, text.encode(), content_type)

    def _send(
        self,
        status: int,
        data: bytes,
        content_type: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        try:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a "hang" fault outlived its timeout)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


# RunPod sends its quota state on every authenticated answer (IETF ratelimit-headers draft).
RATE_LIMIT_HEADERS = {
    "RateLimit": '"minute";r=59;t=60, "hour";r=2999;t=3600, "day";r=49999;t=86400',
    "RateLimit-Policy": '"minute";q=60;w=60, "hour";q=3000;w=3600, "day";q=50000;w=86400',
}
