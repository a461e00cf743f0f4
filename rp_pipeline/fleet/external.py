"""Who provides a run's pods: RunPod, or a ComfyUI the user runs themselves (`COMFYUI_URL`),
played as the run's single "pod".

The op chain is the same for both: `PodProvider` is what the fleet needs of RunPod, and
`ExternalComfyUI` provides it for the external server, so launch_pod "launches" it (nothing is
created, no RunPod call), wait_for_ready waits for ComfyUI to answer, submit/harvest use it
through the same queue, and terminate_pod terminates nothing and settles a cost of 0. The server
has no sync agent, so the harvest fetches each output from its /view and uploads it to R2
(r2_source `pipeline_fallback`) at once instead of waiting for receipts.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.replace import replace_fields
from rp_pipeline.integrations.runpod.client import GpuType, Pod, PodSpec, ReadyPod
from rp_pipeline.integrations.runpod.errors import RunPodError
from rp_pipeline.integrations.runpod.names import run_slug
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV


class PodsClient(Protocol):
    """The calls the fleet makes on RunPod (`RunPodClient` has them)."""

    def launch(self, spec: PodSpec, run_id: str) -> Pod: ...
    def get(self, pod_id: str) -> Pod | None: ...
    def list_pods(self) -> list[Pod]: ...
    def gpu_types(self) -> list[GpuType]: ...
    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None: ...
    def wait_until_ready(
        self, pod_id: str, port: int, deadline_s: float, terminate_on_timeout: bool = True
    ) -> ReadyPod: ...
    def terminate(self, pod_id: str, confirm_timeout_s: float = 60.0) -> None: ...
    def with_read_patience(self, seconds: float) -> PodsClient: ...


class PodProvider(Protocol):
    """What provides a run's pods (`RunPodResource` is one): the pod's shape and a client."""

    image: str
    gpu_types: list[str]
    cloud_type: str
    network_volume_id: str | None
    max_cost_per_hr: float | None
    env: dict[str, str]

    def get_client(self) -> PodsClient: ...
    def pod_spec(self, **overrides: Any) -> PodSpec: ...


def external_pod_id(run_id: str) -> str:
    return "external-" + run_slug(run_id)


class ExternalClient:
    """`PodsClient` for the one external server: its "pod" is always there for the run."""

    def __init__(self, comfyui: ComfyUIResource) -> None:
        self.comfyui = comfyui

    def _pod(self, pod_id: str, run_id: str | None = None) -> Pod:
        token = self.comfyui.external_token
        return Pod(
            id=pod_id, name=f"dagster-{pod_id}", desired_status="RUNNING",
            gpu_type="external ComfyUI", cost_per_hr=0.0,
            env={POD_TOKEN_ENV: token} if token else {}, run_id=run_id, status="RUNNING",
        )  # fmt: skip

    def launch(self, spec: PodSpec, run_id: str) -> Pod:
        return self._pod(external_pod_id(run_id), run_id)

    def get(self, pod_id: str) -> Pod | None:
        return self._pod(pod_id) if pod_id.startswith("external-") else None

    def list_pods(self) -> list[Pod]:
        return []  # nothing of ours bills at RunPod: no cost, nothing to sweep

    def gpu_types(self) -> list[GpuType]:
        return []

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        return None

    def wait_until_ready(
        self, pod_id: str, port: int, deadline_s: float, terminate_on_timeout: bool = True
    ) -> ReadyPod:
        """Ready = the external ComfyUI answers (with COMFYUI_TOKEN when one is set)."""
        url = str(self.comfyui.external_url)
        give_up = time.monotonic() + deadline_s
        with self.comfyui.get_client() as client:
            while not client.is_ready():
                if time.monotonic() >= give_up:
                    raise RunPodError(
                        f"the external ComfyUI at {url} (COMFYUI_URL) did not answer within "
                        f"{deadline_s:.0f} s"
                    )
                time.sleep(1.0)
        return ReadyPod(pod=self._pod(pod_id), comfyui_url=url)

    def terminate(self, pod_id: str, confirm_timeout_s: float = 60.0) -> None:
        """Nothing to end: the server is the user's."""

    def with_read_patience(self, seconds: float) -> ExternalClient:
        return self  # nothing is read from RunPod


class ExternalComfyUI:
    """`PodProvider` for a ComfyUI the user runs (COMFYUI_URL): no GPU types, no price."""

    image = ""
    cloud_type = "external"
    network_volume_id: str | None = None
    max_cost_per_hr: float | None = 0.0

    def __init__(self, comfyui: ComfyUIResource) -> None:
        self.comfyui = comfyui
        self.gpu_types: list[str] = []
        self.env: dict[str, str] = {}

    def get_client(self) -> ExternalClient:
        return ExternalClient(self.comfyui)

    def pod_spec(self, **overrides: Any) -> PodSpec:
        # Nothing is created: the spec only travels through the launch path unchanged.
        return PodSpec()


def pods_for(
    runpod: PodProvider, comfyui: ComfyUIResource, settings: GenerationSettings
) -> tuple[PodProvider, GenerationSettings]:
    """(what provides the run's pods, the settings to run with): RunPod, or the external
    ComfyUI with one pod and the /view upload instead of waiting for agent receipts."""
    if not comfyui.uses_external_comfyui:
        return runpod, settings
    external_settings = replace_fields(
        settings, enable_r2_sync=False, max_live_pods=1, max_replacement_pods=0
    )
    return ExternalComfyUI(comfyui), external_settings
