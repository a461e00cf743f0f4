"""`RestBackend`: RunPod's REST API v2 (`{base}/v2/...`), the default backend.

Facts of the v2 API it relies on (the body mapping is in `rest_records`):
- `Authorization: Bearer KEY`; 401 (bad key) and 403 (key without access) are auth errors.
- Errors are `application/problem+json` `{title, status, detail, errors?}`; `errors[]` names
  each rejected field. createPod answers 400 both for "no capacity for this GPU/datacenter" and
  for a rule violation (its documentation says to try the next candidate on 400); 422 is a body
  the contract refuses (never retried).
- 429 carries `Retry-After` (seconds): the call was not performed. It is raised as
  `RunPodRateLimitedError` with that wait; `RunPodClient` waits it out (never less) and sends the
  call again. 5xx and lost answers are `RunPodTransientError(maybe_applied=True)`, so the client
  looks a create up by name before it is sent again. This module sends each call once.
- Pod `status` PROVISIONING -> STARTING -> RUNNING, or EXITED / ERROR / TERMINATED.
- `GET /v2/pods/{id}/logs` is a Server-Sent Events stream (`data: {"ts","source","line"}`),
  backfilled with the last `tail` lines and then live: we read the backfill and hang up.
- `GET /v2/pods` has no paging in this version of the document: one answer holds every pod.
- No interruptible (spot) pods: those need the GraphQL backend (`RUNPOD_API=graphql`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import requests
from urllib3.exceptions import NewConnectionError

from rp_pipeline.integrations.runpod.errors import (
    GpuUnavailableError,
    RunPodApiError,
    RunPodAuthError,
    RunPodNotFoundError,
    RunPodRateLimitedError,
    RunPodRequestError,
    RunPodTransientError,
)
from rp_pipeline.integrations.runpod.rest_records import (
    create_body,
    gpu_record,
    pod_record,
    template_body,
    template_record,
)
from rp_pipeline.integrations.runpod.session import DEFAULT_API_BASE_URL, api_session, timeout_error

log = logging.getLogger(__name__)

KEY_HELP = "check RUNPOD_API_KEY (RunPod console > Settings > API Keys)"


class RestBackend:
    """RunPod's REST API v2. Records come back in the shape `RunPodBackend` documents."""

    supports_interruptible = False

    def __init__(
        self,
        api_key: str,
        api_base_url: str | None = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        self._session = api_session(api_key, {"Accept": "application/json"})
        self.base_url = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self.request_timeout_s = request_timeout_s

    def __repr__(self) -> str:
        return f"RestBackend(base_url={self.base_url!r})"

    # ------------------------------------------------------------------ catalog

    def gpu_types(self, datacenter: str | None = None) -> list[dict[str, Any]]:
        params = {"include": "AVAILABILITY", "product": "POD"}
        body = self._call("GET", "/v2/catalog/gpus", "listGpuTypes", params=params)
        return [gpu_record(g, datacenter) for g in body["gpus"]]

    def network_volumes(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/network-volumes", "listNetworkVolumes")
        return [
            {"id": v["id"], "name": v["name"], "size": v["size"], "dataCenterId": v["dataCenter"]}
            for v in body["networkVolumes"]
        ]

    # ------------------------------------------------------------------ pods

    def list_pods(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/pods", "listPods")
        return [pod_record(p) for p in body["pods"]]

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        try:
            body = self._call("GET", f"/v2/pods/{pod_id}", "getPod")
        except RunPodNotFoundError:
            return None
        return pod_record(body)

    def create_pod(self, request: dict[str, Any], bid_per_gpu: float | None) -> dict[str, Any]:
        if bid_per_gpu is not None:
            raise RunPodApiError(
                "REST API v2 has no interruptible (spot) pods: set RUNPOD_API=graphql for them"
            )
        body = self._call("POST", "/v2/pods", "createPod", json_body=create_body(request))
        return pod_record(body)

    def terminate_pod(self, pod_id: str) -> None:
        try:
            # deletePod: "equivalent to" the terminate action, and answers 404 once it is gone.
            self._call("DELETE", f"/v2/pods/{pod_id}", "deletePod")
        except RunPodNotFoundError:
            return  # already gone: terminate is idempotent

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        """The last `lines` lines of the pod's log (system and container), or None if RunPod
        cannot give them now. Best effort: it never raises, so it cannot hide the failure it
        is called to explain."""
        url = f"{self.base_url}/v2/pods/{pod_id}/logs"
        try:
            with self._session.get(
                url,
                params={"tail": lines},
                headers={"Accept": "text/event-stream"},
                stream=True,
                timeout=(5.0, 2.0),  # the backfill arrives at once; silence means it is over
            ) as response:
                if response.status_code != 200:
                    return None
                return _read_sse_lines(response, lines)
        except requests.RequestException:
            return None

    # ------------------------------------------------------------------ templates

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        body = template_body(template)
        if template.get("id"):
            saved = self._call(
                "PATCH", f"/v2/templates/{template['id']}", "updateTemplate", json_body=body
            )
        else:
            saved = self._call("POST", "/v2/templates", "createTemplate", json_body=body)
        return template_record(saved)

    def list_templates(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/templates", "listTemplates")
        keep = ("id", "name", "imageName", "ports")  # what the GraphQL backend lists
        return [{k: template_record(t)[k] for k in keep} for t in body["templates"]]

    # ------------------------------------------------------------------ transport

    def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: dict[str, Any] | None = None,
    ) -> Any:
        response = self._send(method, f"{self.base_url}{path}", params, json_body)
        if response.status_code == 429:
            # Not performed: safe to send again once Retry-After has passed (the client does).
            raise RunPodRateLimitedError(
                f"RunPod rate limit (HTTP 429) on {operation}",
                retry_after_s=_retry_after(response),
            )
        return _read(response, operation)

    def _send(
        self, method: str, url: str, params: dict[str, Any] | None, body: dict[str, Any] | None
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                url,
                params=params,
                data=json.dumps(body) if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=(5.0, self.request_timeout_s),
            )
        except requests.Timeout as exc:
            raise timeout_error(exc, self.base_url, self.request_timeout_s) from None
        except requests.ConnectionError as exc:
            refused = _connection_refused(exc)
            what = "could not connect" if refused else "the answer was lost"
            raise RunPodTransientError(
                f"network error talking to the RunPod API at {self.base_url}: {what} "
                f"({type(exc).__name__})",
                maybe_applied=not refused,
            ) from None


def _read(response: requests.Response, operation: str) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise RunPodTransientError(
                f"RunPod API answered {operation} with HTTP {status} and a non-JSON body",
                maybe_applied=True,
            ) from None
    problem = _problem(response)
    if status == 401:
        raise RunPodAuthError(f"RunPod rejected the API key (HTTP 401: {problem}); {KEY_HELP}")
    if status == 403:
        raise RunPodAuthError(
            f"RunPod refused {operation} for this API key (HTTP 403: {problem}); give the key "
            "read/write access to pods and templates, or use another key"
        )
    if status >= 500 or problem is None:
        raise RunPodTransientError(
            f"RunPod API answered {operation} with HTTP {status}"
            + (f": {problem}" if problem else " and a non-JSON body"),
            maybe_applied=True,
        )
    message = f"RunPod refused {operation} (HTTP {status}): {problem}"
    if status == 404:
        raise RunPodNotFoundError(message)
    if status == 422:
        raise RunPodRequestError(message)
    if status == 400 and operation == "createPod":
        # Capacity exhaustion has no code of its own: the next candidate may place.
        raise GpuUnavailableError(problem)
    if status == 402:
        raise RunPodApiError(f"{message}; add funds to the RunPod account")
    raise RunPodApiError(message)


def _problem(response: requests.Response) -> str | None:
    """One line from an `application/problem+json` answer: detail, then each field error."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    detail = str(body.get("detail") or body.get("title") or "no detail")
    errors = [str(e) for e in body.get("errors") or []]
    return f"{detail}: {'; '.join(errors)}" if errors else detail


def _retry_after(response: requests.Response) -> float:
    """Retry-After in seconds (this API sends integers); 5 s if it is missing or unreadable."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "5")))
    except ValueError:
        return 5.0


def _connection_refused(exc: requests.ConnectionError) -> bool:
    """True when the request never left (refused, no route, DNS): it cannot have applied."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _read_sse_lines(response: requests.Response, wanted: int, budget_s: float = 3.0) -> list[str]:
    """Up to `wanted` log lines from the stream. The stream stays open after the backfill (live
    lines, keep-alive comments), so reading stops at `wanted` lines, after `budget_s`, or after
    a silence of the read timeout, whichever comes first."""
    lines: list[str] = []
    deadline = time.monotonic() + budget_s
    try:
        for raw in response.iter_lines(decode_unicode=True):
            if time.monotonic() > deadline:
                break
            if not raw or not raw.startswith("data:"):
                continue
            try:
                event = json.loads(raw[5:].strip())
            except ValueError:
                continue
            lines.append(str(event.get("line", "")))
            if len(lines) >= wanted:
                break
    except requests.RequestException:
        pass  # the read timeout ends the backfill: the stream stays open for live lines
    return lines[-wanted:]
