"""`RestBackend`: RunPod's REST API v2 (`{base}/v2/...`), the default backend.

Sends only fields RunPod's v2 OpenAPI document defines (its request schemas refuse any other
with a 422), and maps every answer to the record shape `RunPodBackend` promises, so the pod
logic above is the same for both APIs. Facts of the v2 API it relies on:
- `Authorization: Bearer KEY`; 401 (bad key) and 403 (key without access) are auth errors.
- Errors are `application/problem+json` `{title, status, detail, errors?}`; `errors[]` names
  each rejected field. createPod answers 400 both for "no capacity for this GPU/datacenter" and
  for a rule violation (its documentation says to try the next candidate on 400); 422 is a body
  the contract refuses (never retried).
- 429 carries `Retry-After` (seconds): the call was not performed; we wait that long, never
  less, then send it again. 5xx and lost answers are `RunPodTransientError(maybe_applied=True)`,
  so a create is looked up by name before it is sent again (`RunPodClient._create_once`).
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

from rp_pipeline.integrations.runpod.backend import (
    DEFAULT_API_BASE_URL,
    api_session,
    timeout_error,
)
from rp_pipeline.integrations.runpod.errors import (
    GpuUnavailableError,
    RunPodApiError,
    RunPodAuthError,
    RunPodNotFoundError,
    RunPodRateLimitedError,
    RunPodRequestError,
    RunPodTransientError,
)

log = logging.getLogger(__name__)

KEY_HELP = "check RUNPOD_API_KEY (RunPod console > Settings > API Keys)"
# v2 status -> the GraphQL-era desiredStatus the records also carry.
DESIRED = {
    "PROVISIONING": "RUNNING",
    "STARTING": "RUNNING",
    "RUNNING": "RUNNING",
    "ERROR": "EXITED",
}


class RestBackend:
    """RunPod's REST API v2. Records come back in the shape `RunPodBackend` documents."""

    supports_interruptible = False

    def __init__(
        self,
        api_key: str,
        api_base_url: str | None = None,
        request_timeout_s: float = 30.0,
        *,
        rate_limit_waits: int = 5,
        max_retry_after_s: float = 300.0,
    ) -> None:
        self._session = api_session(api_key, {"Accept": "application/json"})
        self.base_url = (api_base_url or DEFAULT_API_BASE_URL).rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.rate_limit_waits = rate_limit_waits
        self.max_retry_after_s = max_retry_after_s

    def __repr__(self) -> str:
        return f"RestBackend(base_url={self.base_url!r})"

    # ------------------------------------------------------------------ catalog

    def gpu_types(self, datacenter: str | None = None) -> list[dict[str, Any]]:
        params = {"include": "AVAILABILITY", "product": "POD"}
        body = self._call("GET", "/v2/catalog/gpus", "listGpuTypes", params=params)
        return [_gpu_record(g, datacenter) for g in body["gpus"]]

    def network_volumes(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/network-volumes", "listNetworkVolumes")
        return [
            {"id": v["id"], "name": v["name"], "size": v["size"], "dataCenterId": v["dataCenter"]}
            for v in body["networkVolumes"]
        ]

    # ------------------------------------------------------------------ pods

    def list_pods(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/pods", "listPods")
        return [_pod_record(p) for p in body["pods"]]

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        try:
            body = self._call("GET", f"/v2/pods/{pod_id}", "getPod")
        except RunPodNotFoundError:
            return None
        return _pod_record(body)

    def create_pod(self, request: dict[str, Any], bid_per_gpu: float | None) -> dict[str, Any]:
        if bid_per_gpu is not None:
            raise RunPodApiError(
                "REST API v2 has no interruptible (spot) pods: set RUNPOD_API=graphql for them"
            )
        body = self._call("POST", "/v2/pods", "createPod", json_body=create_body(request))
        return _pod_record(body)

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
        return _template_record(saved)

    def list_templates(self) -> list[dict[str, Any]]:
        body = self._call("GET", "/v2/templates", "listTemplates")
        keep = ("id", "name", "imageName", "ports")  # what the GraphQL backend lists
        return [{k: _template_record(t)[k] for k in keep} for t in body["templates"]]

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
        url = f"{self.base_url}{path}"
        for wait_number in range(self.rate_limit_waits + 1):
            response = self._send(method, url, params, json_body)
            if response.status_code != 429:
                return _read(response, operation)
            wait = _retry_after(response)
            if wait_number == self.rate_limit_waits or wait > self.max_retry_after_s:
                raise RunPodRateLimitedError(
                    f"RunPod rate limit (HTTP 429) on {operation}: still limited after "
                    f"{wait_number} waits (next Retry-After {wait:.0f} s); retry later",
                    retry_after_s=wait,
                )
            # 429 means the call was not performed: re-sending after the wait cannot duplicate.
            log.warning(
                "RunPod rate limit (HTTP 429) on %s; waiting %.0f s as Retry-After says",
                operation,
                wait,
            )
            time.sleep(wait)
        raise AssertionError("unreachable")

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


# ---------------------------------------------------------------------- requests


def create_body(request: dict[str, Any]) -> dict[str, Any]:
    """Our create request (GraphQL input field names) as a v2 `CreatePodRequest`.

    Fields v2 does not define are dropped: minVcpuCount / minMemoryInGb (v2 picks the machine
    by GPU type), supportPublicIp, volumeInGb under 10 GB (v2's persistent-mount floor).
    cloudType ALL becomes v2's default, SECURE: v2 has no "either cloud" create.
    """
    body: dict[str, Any] = {
        "name": request["name"],
        "gpu": {"id": request["gpuTypeId"], "count": int(request.get("gpuCount") or 1)},
    }
    if request.get("imageName"):
        body["image"] = request["imageName"]
    if request.get("cloudType") in ("SECURE", "COMMUNITY"):
        body["cloud"] = request["cloudType"]
    if request.get("containerDiskInGb"):
        body["disk"] = int(request["containerDiskInGb"])
    if request.get("dockerArgs"):
        body["args"] = request["dockerArgs"]
    if request.get("ports"):
        body["ports"] = [p.strip() for p in str(request["ports"]).split(",") if p.strip()]
    if request.get("env"):
        body["env"] = {e["key"]: str(e.get("value") or "") for e in request["env"]}
    path = request.get("volumeMountPath") or "/workspace"
    if request.get("networkVolumeId"):
        body["mounts"] = {"network": [{"volumeId": request["networkVolumeId"], "path": path}]}
    elif int(request.get("volumeInGb") or 0) >= 10:
        body["mounts"] = {"persistent": {"size": int(request["volumeInGb"]), "path": path}}
    datacenters = request.get("dataCenterIds") or (
        [request["dataCenterId"]] if request.get("dataCenterId") else []
    )
    if datacenters:
        body["dataCenterIds"] = list(datacenters)
    if request.get("templateId"):
        body["templateId"] = request["templateId"]
    if request.get("startSsh"):
        body["startSsh"] = True
    return body


def template_body(template: dict[str, Any]) -> dict[str, Any]:
    """A saveTemplate input (GraphQL field names) as a v2 Create/UpdateTemplateRequest.

    `readme` has no v2 field and is dropped; an empty registry auth id means none."""
    body: dict[str, Any] = {
        "name": template["name"],
        "image": template["imageName"],
        "args": template.get("dockerArgs") or "",
        "ports": [p.strip() for p in str(template.get("ports") or "").split(",") if p.strip()],
        "env": {e["key"]: str(e.get("value") or "") for e in template.get("env") or []},
        "serverless": bool(template.get("isServerless")),
        "public": bool(template.get("isPublic")),
        "startSsh": bool(template.get("startSsh", True)),
        "startJupyter": bool(template.get("startJupyter", False)),
    }
    if template.get("containerDiskInGb"):
        body["disk"] = int(template["containerDiskInGb"])
    if int(template.get("volumeInGb") or 0) >= 10:
        body["mounts"] = {
            "persistent": {
                "size": int(template["volumeInGb"]),
                "path": template.get("volumeMountPath") or "/workspace",
            }
        }
    if template.get("containerRegistryAuthId"):
        body["registry"] = template["containerRegistryAuthId"]
    return body


# ---------------------------------------------------------------------- answers


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


def _pod_record(pod: dict[str, Any]) -> dict[str, Any]:
    status = str(pod.get("status") or "UNKNOWN")
    gpu = pod.get("gpu") or {}
    runtime = pod.get("runtime") or None
    ports = []
    for mapping in (runtime or {}).get("ports") or []:
        ports.append(
            {
                "ip": mapping.get("ip"),
                "isIpPublic": bool(mapping.get("ip") and mapping.get("public")),
                "privatePort": mapping.get("private"),
                "publicPort": mapping.get("public"),
                "type": mapping.get("type"),
            }
        )
    return {
        "id": pod["id"],
        "name": pod.get("name") or "",
        "imageName": pod.get("image"),
        "status": status,
        "desiredStatus": DESIRED.get(status, status),
        "env": dict(pod.get("env") or {}),
        "costPerHr": pod.get("cost"),
        "gpuCount": gpu.get("count"),
        "ports": ",".join(pod.get("ports") or []),
        "dataCenterId": pod.get("dataCenterId"),
        "machine": {
            "gpuDisplayName": gpu.get("id"),
            "gpuTypeId": gpu.get("id"),
            "dataCenterId": pod.get("dataCenterId"),
        },
        "runtime": {"ports": ports} if runtime is not None else None,
    }


def _gpu_record(gpu: dict[str, Any], datacenter: str | None) -> dict[str, Any]:
    price = gpu.get("price") or {}
    datacenters = [
        {"id": d["id"], "availability": d["availability"]} for d in gpu.get("dataCenters") or []
    ]
    availability = gpu.get("availability")
    if datacenter is not None and availability is not None:
        availability = next(
            (d["availability"] for d in datacenters if d["id"] == datacenter), "NONE"
        )
    return {
        "id": gpu["id"],
        "displayName": gpu.get("name") or gpu["id"],
        "memoryInGb": gpu.get("memory"),
        "securePrice": price.get("secure"),
        "communityPrice": price.get("community"),
        "secureSpotPrice": None,  # v2 quotes no spot price
        "availability": availability,
        "dataCenters": datacenters,
    }


def _template_record(template: dict[str, Any]) -> dict[str, Any]:
    persistent = (template.get("mounts") or {}).get("persistent") or {}
    return {
        "id": template["id"],
        "name": template["name"],
        "imageName": template.get("image"),
        "dockerArgs": template.get("args") or "",
        "containerDiskInGb": template.get("disk"),
        "volumeInGb": persistent.get("size", 0),
        "volumeMountPath": persistent.get("path"),
        "ports": ",".join(template.get("ports") or []),
        "env": [{"key": k, "value": v} for k, v in (template.get("env") or {}).items()],
        "isServerless": template.get("serverless"),
    }
