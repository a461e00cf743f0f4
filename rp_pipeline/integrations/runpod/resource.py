"""RunPod for Dagster: `RunPodResource`, plus the whole RunPod layer API (contract 5).

The logic lives in `client` (plain Python, no Dagster import), errors in `errors`, the API seam
in `backend` (with `rest` and `graphql` behind it); this module re-exports them so callers need
one import.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from rp_pipeline.integrations.runpod.backend import RunPodBackend, make_backend
from rp_pipeline.integrations.runpod.client import (
    CLOUD_TYPES,
    COMFYUI_PORT,
    DEFAULT_CREATE_ATTEMPTS,
    DEFAULT_GPU_TYPES,
    DEFAULT_PORTS,
    DEFAULT_READ_PATIENCE_S,
    GpuType,
    Pod,
    PodSpec,
    ReadyPod,
    RunPodClient,
    pod_name,
    port_url,
)
from rp_pipeline.integrations.runpod.errors import (
    GpuUnavailableError,
    NoCapacityError,
    PodLaunchError,
    PodNotReadyError,
    RunPodApiError,
    RunPodAuthError,
    RunPodError,
    RunPodTransientError,
    UnknownGpuError,
)
from rp_pipeline.integrations.runpod.graphql import GraphQLBackend
from rp_pipeline.integrations.runpod.rest import RestBackend

__all__ = [
    "CLOUD_TYPES",
    "COMFYUI_PORT",
    "DEFAULT_GPU_TYPES",
    "DEFAULT_PORTS",
    "GpuType",
    "GpuUnavailableError",
    "GraphQLBackend",
    "NoCapacityError",
    "Pod",
    "PodLaunchError",
    "PodNotReadyError",
    "PodSpec",
    "ReadyPod",
    "RestBackend",
    "RunPodApiError",
    "RunPodAuthError",
    "RunPodBackend",
    "RunPodClient",
    "RunPodError",
    "RunPodResource",
    "RunPodTransientError",
    "UnknownGpuError",
    "make_backend",
    "pod_name",
    "port_url",
]


class RunPodResource(ConfigurableResource):
    """RunPod for ops: `RunPodResource(api_key=EnvVar("RUNPOD_API_KEY"), ...)`.

    `api_base_url` None means `$RUNPOD_API_BASE_URL`, else RunPod itself (as the SDK does), so
    the devstack's env file is enough to point a code location at the emulator. The market a pod
    is rented on (on-demand or spot, and the spot bid) is the run's `PodMarket` (RP_POD_MARKET,
    RP_SPOT_BID_MAX), its one home.
    """

    api_key: str = Field(repr=False, description="RunPod API key; pass EnvVar('RUNPOD_API_KEY')")
    api_base_url: str | None = None
    # "rest" (REST API v2) or "graphql"; None: $RUNPOD_API, else REST v2.
    api: str | None = None
    # The image your CI publishes (RP_IMAGE), or a RunPod template (RUNPOD_TEMPLATE_ID) whose
    # image runs when no image is set here; with neither no pod is created.
    image: str = ""
    gpu_types: list[str] = Field(default_factory=lambda: list(DEFAULT_GPU_TYPES))
    cloud_type: str = "ALL"
    network_volume_id: str | None = None
    template_id: str | None = None
    container_disk_gb: int = 20
    volume_gb: int = 100
    volume_mount_path: str = "/workspace"
    ports: str = DEFAULT_PORTS
    env: dict[str, str] = Field(default_factory=dict)
    min_vcpu: int = 2
    min_memory_gb: int = 15
    max_cost_per_hr: float | None = None
    poll_interval_s: float = 2.0
    create_attempts: int = Field(
        default=DEFAULT_CREATE_ATTEMPTS,
        ge=1,
        description="creates one pod launch may send after 5xx or lost answers (each looked up "
        "by the pod's name first): the most one pod slot can create",
    )
    read_patience_s: float = Field(
        default=DEFAULT_READ_PATIENCE_S,
        ge=0,
        description="how long a RunPod read is retried, with backoff, while the API fails",
    )

    def get_client(self) -> RunPodClient:
        return RunPodClient(
            self.api_key,
            self.api_base_url,
            poll_interval_s=self.poll_interval_s,
            create_attempts=self.create_attempts,
            read_patience_s=self.read_patience_s,
            api=self.api,
        )

    def pod_spec(self, **overrides: Any) -> PodSpec:
        """The configured spec; `overrides` (e.g. env, name, gpu_types) win."""
        spec = PodSpec(
            image=self.image,
            gpu_types=list(self.gpu_types),
            cloud_type=self.cloud_type,
            network_volume_id=self.network_volume_id or None,
            template_id=self.template_id or None,
            container_disk_gb=self.container_disk_gb,
            volume_gb=self.volume_gb,
            volume_mount_path=self.volume_mount_path,
            ports=self.ports,
            env=dict(self.env),
            min_vcpu=self.min_vcpu,
            min_memory_gb=self.min_memory_gb,
            max_cost_per_hr=self.max_cost_per_hr,
        )
        return replace(spec, **overrides)
