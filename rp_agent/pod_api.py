"""The pod ends itself through RunPod's API, with the id and pod-scoped key RunPod injects.

RunPod puts `RUNPOD_POD_ID` and a `RUNPOD_API_KEY` limited to this one pod into every container;
`RUNPOD_API_BASE_URL` (default `https://api.runpod.io`) points elsewhere only off RunPod (the
devstack). The call is REST v2 `POST /v2/pods/{id}/action {"action": "terminate"}` (204). When
that route is missing (a GraphQL-only API) or refuses the pod's key, GraphQL `podTerminate` is
tried instead.
Plain urllib: the pod image stays small.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger("rp_agent.pod_api")

DEFAULT_API_BASE_URL = "https://api.runpod.io"
TIMEOUT_S = 30


class PodApiError(RuntimeError):
    """The terminate call did not go through; `retry_after_s` hints when to try again."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PodIdentity:
    pod_id: str
    api_key: str
    api_base_url: str = DEFAULT_API_BASE_URL

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> PodIdentity:
        env = os.environ if environ is None else environ
        missing = [n for n in ("RUNPOD_POD_ID", "RUNPOD_API_KEY") if not env.get(n)]
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} not set: RunPod sets both in every pod; off RunPod "
                "export them (and RUNPOD_API_BASE_URL) to let this pod end itself"
            )
        base = (env.get("RUNPOD_API_BASE_URL") or DEFAULT_API_BASE_URL).rstrip("/")
        return cls(env["RUNPOD_POD_ID"], env["RUNPOD_API_KEY"], base)

    def __repr__(self) -> str:  # the key stays out of every log line
        return f"PodIdentity(pod_id={self.pod_id!r}, api_base_url={self.api_base_url!r})"


def terminate_self(pod: PodIdentity) -> None:
    """Terminate this pod; returns once RunPod accepted it (or no longer knows the pod)."""
    status, content_type, body = _post(
        pod, f"/v2/pods/{pod.pod_id}/action", {"action": "terminate"}
    )
    if status in (200, 204):
        return
    if status == 404 and "problem+json" in content_type:
        log.info("RunPod no longer knows pod %s: it is already gone", pod.pod_id)
        return
    if status in (401, 403, 404, 405):
        # No v2 route at this base URL (a GraphQL-only API), or v2 does not take a pod's own
        # key: GraphQL's podTerminate is the call RunPod's pod-scoped keys were made for.
        v2_error = _error(status, content_type, body)
        try:
            _terminate_graphql(pod)
        except PodApiError as exc:
            raise PodApiError(f"REST v2: {v2_error}; GraphQL: {exc}", exc.retry_after_s) from None
        return
    raise _error(status, content_type, body)


def _terminate_graphql(pod: PodIdentity) -> None:
    query = "mutation($id: String!) { podTerminate(input: {podId: $id}) }"
    status, content_type, body = _post(
        pod, "/graphql", {"query": query, "variables": {"id": pod.pod_id}}
    )
    if status != 200:
        raise _error(status, content_type, body)
    errors = json.loads(body or b"{}").get("errors") or []
    if errors:
        raise PodApiError(f"RunPod refused podTerminate: {errors[0].get('message')}")


def _post(pod: PodIdentity, path: str, payload: dict[str, object]) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        pod.api_base_url + path,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {pod.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        body = exc.read()
        if exc.code == 429:
            raise PodApiError("RunPod API rate limit (429)", _seconds(retry_after)) from None
        return exc.code, exc.headers.get("Content-Type", "") if exc.headers else "", body
    except (urllib.error.URLError, OSError) as exc:
        raise PodApiError(f"RunPod API unreachable at {pod.api_base_url}: {exc}") from None


def _error(status: int, content_type: str, body: bytes) -> PodApiError:
    detail = body[:300].decode(errors="replace").strip()
    if "json" in content_type:
        try:
            parsed = json.loads(body)
            detail = parsed.get("detail") or parsed.get("title") or detail
        except (ValueError, AttributeError):
            pass
    if status in (401, 403):
        return PodApiError(f"RunPod refused the pod's key ({status}): {detail}")
    return PodApiError(f"RunPod API answered {status}: {detail}")


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
