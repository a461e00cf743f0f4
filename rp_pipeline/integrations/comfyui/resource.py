"""Dagster resource holding every ComfyUI setting of the pipeline (the client is plain Python).

Timeouts, polling and outage grace are set here once (the per-prompt deadline is the run's,
`GenerationSettings.prompt_deadline_s`); `get_client` hands out `ComfyUIClient`s configured with
them. A pipeline pod's URL and token are only known
at run time, so they are passed to `get_client`; `external_url` instead names a ComfyUI the user
runs themselves (see docs/pipeline.md, "An external ComfyUI").
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from rp_pipeline.integrations.comfyui.client import ComfyUIClient


class ComfyUIResource(ConfigurableResource):
    """Settings for talking to ComfyUI (all times in seconds)."""

    external_url: str | None = Field(
        default=None,
        description=(
            "URL of a ComfyUI you run yourself (e.g. http://127.0.0.1:8188). When set, the "
            "pipeline submits to it instead of launching a RunPod pod. Wired from env "
            "COMFYUI_URL in rp_pipeline.defs.resources."
        ),
    )
    external_token: str | None = Field(
        default=None,
        description=(
            "Bearer token for external_url, if a proxy in front of it wants one. A secret: set "
            "it through EnvVar('COMFYUI_TOKEN'), never in run config. Never sent to pods."
        ),
    )
    request_timeout_s: float = Field(
        default=30.0, description="Per HTTP request; below the RunPod proxy's ~100 s cut-off."
    )
    poll_interval_s: float = Field(
        default=2.0,
        description="How often /history is polled when the event socket is quiet or unavailable.",
    )
    ws_connect_timeout_s: float = Field(
        default=10.0, description="Opening the /ws event socket; on failure wait() polls instead."
    )
    queue_check_s: float = Field(
        default=15.0,
        description=(
            "How often wait() confirms the prompt is still queued or running (a restarted "
            "ComfyUI forgets it: PromptVanished)."
        ),
    )
    unreachable_grace_s: float = Field(
        default=120.0,
        description=(
            "How long wait() rides out connection errors, HTTP 5xx and the proxy's 524 before "
            "ComfyUIUnavailable."
        ),
    )

    @property
    def uses_external_comfyui(self) -> bool:
        """True when the pipeline should use external_url instead of launching a pod."""
        return bool(self.external_url)

    def get_client(
        self, base_url: str | None = None, client_id: str | None = None, token: str | None = None
    ) -> ComfyUIClient:
        """A client for `base_url` (a pod's URL, with the pod's `token`), else for external_url.

        Wait for a prompt with the client (or at least the `client_id`) that submitted it:
        ComfyUI sends a prompt's progress and completion only to that client id.
        """
        if base_url:
            url, auth = base_url, token
        elif self.external_url:
            url, auth = self.external_url, token or self.external_token
        else:
            raise ValueError(
                "no ComfyUI URL: pass the pod's URL or set ComfyUIResource.external_url"
            )
        return ComfyUIClient(
            url,
            client_id,
            request_timeout_s=self.request_timeout_s,
            poll_interval_s=self.poll_interval_s,
            ws_connect_timeout_s=self.ws_connect_timeout_s,
            unreachable_grace_s=self.unreachable_grace_s,
            queue_check_s=self.queue_check_s,
            token=auth,
        )
