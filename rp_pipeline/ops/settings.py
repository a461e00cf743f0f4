"""How a generation run sizes its pod and how long it waits: one resource, set per environment."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

# Pod env entries that carry secrets are RunPod secret references, resolved by RunPod when the
# container starts, so the key values never transit Dagster (DESIGN: prefer secret references).
DEFAULT_SECRET_REFS = {
    "R2_ACCESS_KEY_ID": "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY": "R2_SECRET_ACCESS_KEY",
}


class GenerationSettings(ConfigurableResource):
    """Deadlines, guards and pod env for `generated_video` runs (the pod's shape: image, GPU
    types, volume, per-pod price cap, is `RunPodResource`'s)."""

    comfyui_port: int = 8188
    # Across all running pods of the account: checked before and right after every launch.
    max_total_cost_per_hr: float = 5.0
    # At most this many pods of in-progress Dagster runs at once; a run waits up to
    # `pod_slot_wait_s` for a slot (pools / run queues in dagster.yaml make it strict).
    max_live_pods: int = 1
    pod_slot_wait_s: float = 900.0
    enable_r2_sync: bool = True
    # Env name in the pod -> RunPod secret name; rendered as {{ RUNPOD_SECRET_<name> }}.
    pod_secret_refs: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SECRET_REFS))
    # Non-secret extras for the pod env (e.g. WAN_720P, GPU_TIER, stand-in knobs on the devstack).
    extra_pod_env: dict[str, str] = Field(default_factory=dict)
    ready_deadline_s: float = 300.0
    prompt_deadline_s: float = 3600.0
    r2_object_deadline_s: float = 120.0
    # The reaper terminates any pod of ours older than this, whatever its run says.
    max_pod_lifetime_s: float = 4 * 3600.0
