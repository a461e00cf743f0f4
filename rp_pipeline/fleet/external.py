"""A ComfyUI the user runs themselves (`COMFYUI_URL`), played as the run's single "pod".

The op chain stays the same: `ExternalComfyUI` stands in for `RunPodResource` and its client
for `RunPodClient`, so launch_pod "launches" the external server (nothing is created, no RunPod
call), wait_for_ready waits for ComfyUI to answer, submit/harvest use it through the same
queue, and terminate_pod terminates nothing and settles a cost of 0. The server has no sync
agent, so the harvest fetches each output from its /view and uploads it to R2 (r2_source
`pipeline_fallback`) at once instead of waiting for receipts.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.replace import replace_fields
from rp_pipeline.integrations.runpod.client import PodSpec
from rp_pipeline.integrations.runpod.errors import RunPodError
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV


def uses_external(comfyui: ComfyUIResource) -> bool:
    return comfyui.uses_external_comfyui


@dataclass
class _ExternalPod:
    """The fields of `Pod` the ops read."""

    id: str
    name: str
    run_id: str
    gpu_type: str = "external ComfyUI"
    cost_per_hr: float = 0.0
    desired_status: str = "RUNNING"
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class _Ready:
    comfyui_url: str


# Every client of the process sees the same "pods" (each op and worker thread makes its own).
_pods: dict[str, _ExternalPod] = {}


class ExternalClient:
    """The part of `RunPodClient` the op chain uses, for the one external server."""

    def __init__(self, comfyui: ComfyUIResource) -> None:
        self.comfyui = comfyui

    def launch(self, spec: Any, run_id: str) -> _ExternalPod:
        pod_id = "external-" + re.sub(r"[^a-z0-9]", "", run_id.lower())[:8]
        env = {POD_TOKEN_ENV: self.comfyui.external_token} if self.comfyui.external_token else {}
        pod = _ExternalPod(id=pod_id, name=f"dagster-{pod_id}", run_id=run_id, env=env)
        _pods[pod_id] = pod
        return pod

    def get(self, pod_id: str) -> _ExternalPod | None:
        return _pods.get(pod_id)

    def list_pods(self) -> list[_ExternalPod]:
        return []  # nothing of ours bills at RunPod: no cost, nothing to sweep

    def gpu_types(self) -> list[Any]:
        return []

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        return None

    def wait_until_ready(
        self, pod_id: str, port: int, deadline_s: float, terminate_on_timeout: bool = True
    ) -> _Ready:
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
        return _Ready(comfyui_url=url)

    def terminate(self, pod_id: str, confirm_timeout_s: float = 0.0) -> None:
        """Nothing to end: the server is the user's. The "pod" leaves the fleet."""
        pod = _pods.pop(pod_id, None)
        if pod is not None:
            pod.desired_status = "TERMINATED"


class ExternalComfyUI:
    """Stands in for `RunPodResource` when COMFYUI_URL is set."""

    def __init__(self, comfyui: ComfyUIResource) -> None:
        self.comfyui = comfyui
        self.gpu_types: list[str] = []
        self.cloud_type = "external"
        self.max_cost_per_hr = 0.0
        self.env: dict[str, str] = {}

    def get_client(self) -> ExternalClient:
        return ExternalClient(self.comfyui)

    def pod_spec(self, **overrides: Any) -> PodSpec:
        # Nothing is created: the spec only travels through the launch path unchanged.
        return PodSpec()


def pods_for(runpod: Any, comfyui: ComfyUIResource, settings: Any) -> tuple[Any, Any]:
    """(what provides the run's pods, the settings to run with): RunPod, or the external
    ComfyUI with one pod and the /view upload instead of waiting for agent receipts."""
    if not uses_external(comfyui):
        return runpod, settings
    external_settings = replace_fields(
        settings, enable_r2_sync=False, max_live_pods=1, max_replacement_pods=0
    )
    return ExternalComfyUI(comfyui), external_settings
