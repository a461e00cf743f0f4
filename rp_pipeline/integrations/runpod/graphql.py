"""`GraphQLBackend`: RunPod's GraphQL API, chosen with `RUNPOD_API=graphql` (still needed for
interruptible pods, which REST v2 does not offer).

It speaks exactly the wire protocol of the `runpod` SDK (`runpod/api/graphql.py`): POST
`{base}/graphql`, `Authorization: Bearer KEY`, 401 -> auth error, `errors[0].message` -> query
error. It posts through its own `requests.Session` rather than `runpod.api.graphql.run_graphql_query`
because the SDK takes the URL from the process-wide `RUNPOD_API_BASE_URL` and the key from the
module-global `runpod.api_key`, and gives no control over timeouts: two clients (devstack and live,
or two keys) in one Dagster process could not coexist, and a lost response could not be told from
a refused request. The documents use GraphQL variables, so pod env values need no escaping; variables are
declared non-null, which GraphQL accepts whether RunPod's argument is nullable or not.

It makes one request per call and never retries: `RunPodClient` is the one retry layer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests

from rp_pipeline.integrations.runpod.errors import (
    CAPACITY_MARKER,
    GpuUnavailableError,
    RunPodApiError,
    RunPodAuthError,
    RunPodTransientError,
)
from rp_pipeline.integrations.runpod.session import DEFAULT_API_BASE_URL, api_session, timeout_error

log = logging.getLogger(__name__)

POD_FIELDS = """
  id name imageName desiredStatus env costPerHr gpuCount podType lastStatusChange uptimeSeconds
  ports volumeMountPath
  machine { gpuDisplayName podHostId dataCenterId }
  runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } }
"""

Q_GPU_TYPES = """
query GpuTypes($lowest: GpuLowestPriceInput!) {
  gpuTypes {
    id displayName memoryInGb secureCloud communityCloud securePrice communityPrice
    secureSpotPrice communitySpotPrice
    lowestPrice(input: $lowest) { minimumBidPrice uninterruptablePrice stockStatus }
  }
}
"""
Q_NETWORK_VOLUMES = "query { myself { networkVolumes { id name size dataCenterId } } }"
Q_TEMPLATES = "query { myself { podTemplates { id name imageName ports } } }"
Q_PODS = f"query myPods {{ myself {{ pods {{ {POD_FIELDS} }} }} }}"
Q_POD = f"query pod($input: PodFilter!) {{ pod(input: $input) {{ {POD_FIELDS} }} }}"
M_DEPLOY = f"""
mutation deploy($input: PodFindAndDeployOnDemandInput!) {{
  podFindAndDeployOnDemand(input: $input) {{ {POD_FIELDS} }}
}}
"""
M_RENT_SPOT = f"""
mutation rent($input: PodRentInterruptableInput!) {{
  podRentInterruptable(input: $input) {{ {POD_FIELDS} }}
}}
"""
M_TERMINATE = "mutation terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"
M_SAVE_TEMPLATE = """
mutation saveTemplate($input: SaveTemplateInput!) {
  saveTemplate(input: $input) {
    id name imageName dockerArgs containerDiskInGb volumeInGb volumeMountPath ports
    env { key value } isServerless
  }
}
"""


class GraphQLBackend:
    """RunPod's GraphQL API (the one the `runpod` SDK uses)."""

    supports_interruptible = True

    def __init__(
        self, api_key: str, api_base_url: str | None = None, request_timeout_s: float = 30.0
    ) -> None:
        self._session = api_session(api_key, {"Content-Type": "application/json"})
        self.url = f"{(api_base_url or DEFAULT_API_BASE_URL).rstrip('/')}/graphql"
        self.request_timeout_s = request_timeout_s

    def __repr__(self) -> str:
        return f"GraphQLBackend(url={self.url!r})"

    def gpu_types(self, datacenter: str | None = None) -> list[dict[str, Any]]:
        lowest: dict[str, Any] = {"gpuCount": 1}
        if datacenter:
            lowest["dataCenterId"] = datacenter
        return list(self._post(Q_GPU_TYPES, {"lowest": lowest})["gpuTypes"] or [])

    def network_volumes(self) -> list[dict[str, Any]]:
        return list(self._post(Q_NETWORK_VOLUMES)["myself"]["networkVolumes"] or [])

    def list_pods(self) -> list[dict[str, Any]]:
        return list(self._post(Q_PODS)["myself"]["pods"] or [])

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        pod: dict[str, Any] | None = self._post(Q_POD, {"input": {"podId": pod_id}})["pod"]
        return pod

    def create_pod(self, request: dict[str, Any], bid_per_gpu: float | None) -> dict[str, Any]:
        if bid_per_gpu is None:
            return dict(self._post(M_DEPLOY, {"input": request})["podFindAndDeployOnDemand"])
        data = self._post(M_RENT_SPOT, {"input": {**request, "bidPerGpu": bid_per_gpu}})
        return dict(data["podRentInterruptable"])

    def terminate_pod(self, pod_id: str) -> None:
        self._post(M_TERMINATE, {"input": {"podId": pod_id}})

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        return dict(self._post(M_SAVE_TEMPLATE, {"input": template})["saveTemplate"])

    def list_templates(self) -> list[dict[str, Any]]:
        return list(self._post(Q_TEMPLATES)["myself"]["podTemplates"] or [])

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        return None  # GraphQL has no pod log query

    def _post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._session.post(
                self.url,
                data=json.dumps({"query": query, "variables": variables or {}}),
                timeout=(5.0, self.request_timeout_s),
            )
        except requests.Timeout as exc:
            raise timeout_error(exc, self.url, self.request_timeout_s) from None
        except requests.ConnectionError as exc:
            raise RunPodTransientError(
                f"network error talking to the RunPod API at {self.url}: {type(exc).__name__}",
                maybe_applied=True,
            ) from None
        return _read_response(response)


def _read_response(response: requests.Response) -> dict[str, Any]:
    if response.status_code == 401:
        raise RunPodAuthError(
            "RunPod rejected the API key (HTTP 401): check RUNPOD_API_KEY "
            "(RunPod console > Settings > API Keys)"
        )
    transient = response.status_code >= 500 or response.status_code == 429
    try:
        body = response.json()
    except ValueError:
        # A proxy's HTML error page: the SDK would surface this as JSONDecodeError.
        message = f"RunPod API answered HTTP {response.status_code} with a non-JSON body"
        if transient:
            raise RunPodTransientError(message, maybe_applied=True) from None
        raise RunPodApiError(message + "; check RUNPOD_API_BASE_URL") from None
    if transient:
        raise RunPodTransientError(
            f"RunPod API answered HTTP {response.status_code}", maybe_applied=True
        )
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        message = str(errors[0].get("message", errors[0]))
        if CAPACITY_MARKER in message.lower():
            raise GpuUnavailableError(message)
        raise RunPodApiError(f"RunPod API error: {message}")
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise RunPodApiError(f"RunPod API answered HTTP {response.status_code} without data")
    return data
