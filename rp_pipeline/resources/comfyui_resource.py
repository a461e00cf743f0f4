"""Dagster resource that hands out ComfyUI clients (the client itself is plain Python)."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from rp_pipeline.resources.comfyui import ComfyUIClient


class ComfyUIResource(ConfigurableResource):
    """Settings for talking to ComfyUI; the URL usually comes from the pod at run time."""

    base_url: str | None = Field(
        default=None,
        description="ComfyUI URL when it is fixed (e.g. COMFYUI_STANDALONE_URL); pods pass theirs.",
    )
    request_timeout_s: float = Field(default=30.0, description="per HTTP request (< proxy 100 s)")
    poll_interval_s: float = Field(default=2.0, description="/history polling interval")
    ws_connect_timeout_s: float = Field(default=10.0)
    prompt_deadline_s: float = Field(default=3600.0, description="default wait() deadline")
    queue_check_s: float = Field(
        default=15.0, description="how often wait() confirms the prompt is still queued"
    )
    unreachable_grace_s: float = Field(
        default=120.0, description="how long wait() rides out 5xx/524/connection errors"
    )

    def get_client(
        self, base_url: str | None = None, client_id: str | None = None, token: str | None = None
    ) -> ComfyUIClient:
        url = base_url or self.base_url
        if not url:
            raise ValueError("no ComfyUI base URL: pass one or configure ComfyUIResource.base_url")
        return ComfyUIClient(
            url,
            client_id,
            request_timeout_s=self.request_timeout_s,
            poll_interval_s=self.poll_interval_s,
            ws_connect_timeout_s=self.ws_connect_timeout_s,
            unreachable_grace_s=self.unreachable_grace_s,
            queue_check_s=self.queue_check_s,
            token=token,
        )
