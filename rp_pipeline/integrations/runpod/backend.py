"""The one seam between our pod logic and RunPod's API: the `RunPodBackend` protocol, and
`make_backend`, which picks REST v2 (`rest.RestBackend`, the default) or GraphQL
(`graphql.GraphQLBackend`, with `RUNPOD_API=graphql`: still needed for interruptible pods).

Records are dicts in the GraphQL shape whichever API answered: pods carry `id`, `name`,
`desiredStatus`, `costPerHr`, `env` ("K=V" strings or a dict), `machine.gpuDisplayName`,
`machine.dataCenterId`, `runtime.ports[]` (`ip isIpPublic privatePort publicPort type`) and, from
REST v2, the lifecycle `status`; GPU types carry `availability` (NONE/LOW/MEDIUM/HIGH) and
`dataCenters` [{id, availability}] when the API reports stock.

A backend makes one request per call (REST v2 waits out a 429's Retry-After, since RunPod did
not perform the call) and raises `RunPodTransientError` for what may be retried; retrying is
`RunPodClient`'s job alone.
"""

from __future__ import annotations

from typing import Any, Protocol

from rp_pipeline.integrations.runpod.errors import RunPodConfigError
from rp_pipeline.integrations.runpod.graphql import GraphQLBackend
from rp_pipeline.integrations.runpod.rest import RestBackend
from rp_pipeline.settings import SettingError, current


class RunPodBackend(Protocol):
    """What the pod logic needs from RunPod; records are dicts in the GraphQL shape."""

    def gpu_types(self, datacenter: str | None = None) -> list[dict[str, Any]]: ...

    def network_volumes(self) -> list[dict[str, Any]]: ...

    def list_pods(self) -> list[dict[str, Any]]: ...

    def get_pod(self, pod_id: str) -> dict[str, Any] | None: ...

    def create_pod(self, request: dict[str, Any], bid_per_gpu: float | None) -> dict[str, Any]: ...

    def terminate_pod(self, pod_id: str) -> None: ...

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]: ...

    def list_templates(self) -> list[dict[str, Any]]: ...

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        """The last `lines` lines of the pod's log; None when the API cannot give them."""
        ...


API_CHOICES = ("rest", "graphql")


def make_backend(
    api_key: str,
    api_base_url: str | None = None,
    request_timeout_s: float = 30.0,
    api: str | None = None,
) -> RunPodBackend:
    """REST v2 unless `api` (default: $RUNPOD_API) says "graphql"."""
    try:
        choice = current("runpod_api", None if api is None else {"RUNPOD_API": api})
    except SettingError as exc:
        raise RunPodConfigError(str(exc)) from None
    if choice == "graphql":
        return GraphQLBackend(api_key, api_base_url, request_timeout_s)
    return RestBackend(api_key, api_base_url, request_timeout_s)
