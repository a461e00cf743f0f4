"""How a generation run sizes its pod and how long it waits: one resource, set per environment."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from rp_agent.lease import DEFAULT_LEASE_S

# Pod env entries that carry secrets are RunPod secret references, resolved by RunPod when the
# container starts, so the key values never transit Dagster (secret references are preferred over plain values).
DEFAULT_SECRET_REFS = {
    "R2_ACCESS_KEY_ID": "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY": "R2_SECRET_ACCESS_KEY",
}


class GenerationSettings(ConfigurableResource):
    """Deadlines, guards and pod env for `generated_video` runs (the pod's shape: image, GPU
    types, volume, per-pod price cap, is `RunPodResource`'s)."""

    comfyui_port: int = Field(default=8188, description="ComfyUI's port inside the pod.")
    max_total_cost_per_hr: float = Field(
        default=5.0,
        description=(
            "$/h cap across all running pods of the account, checked before and right after "
            "every launch (RP_MAX_TOTAL_COST_PER_HR)."
        ),
    )
    max_live_pods: int = Field(
        default=1,
        description=(
            "At most this many pods at once across all runs of the instance: each pod holds a "
            "slot of the instance's `runpod_pods` concurrency pool (its limit is set from this "
            "when the pool has none) until it is terminated (RP_MAX_PODS)."
        ),
    )
    pod_slot_wait_s: float = Field(
        default=900.0, description="How long a run waits for its first pod slot."
    )
    videos_per_pod: int = Field(
        default=4,
        description=(
            "A run of N videos asks for ceil(N / this) pods, then capped by the pool and the cost "
            "cap: fewer pods = fewer boots to pay for, more = a shorter batch (RP_VIDEOS_PER_POD)."
        ),
    )
    max_replacement_pods: int = Field(
        default=1,
        description=(
            "A pod that dies mid-batch gives its prompts back to the queue; when no pod of the "
            "run is left, up to this many replacement pods are launched (in the dead pod's slot)."
        ),
    )
    pod_status_poll_s: float = Field(
        default=10.0,
        description=(
            "How often a waiting worker reads the pod's RunPod status (and always when ComfyUI "
            "does not answer), so a dead pod is noticed within one poll."
        ),
    )
    pod_lease_s: float = Field(
        default=DEFAULT_LEASE_S,
        description=(
            "The run's lease on each pod (an R2 object renewed every lease / 3); the pod stops "
            "itself when it lapses, e.g. after the run's process was killed (RP_POD_LEASE_S)."
        ),
    )
    terminate_confirm_s: float = Field(
        default=60.0,
        description="Terminate is retried (and read back) this long before the pod is reported unconfirmed.",
    )
    r2_retry_s: float = Field(
        default=600.0, description="R2 errors while collecting a video are retried this long."
    )
    enable_r2_sync: bool = Field(
        default=True,
        description="The pod's agent uploads ComfyUI's outputs to R2 (ENABLE_R2_SYNC).",
    )
    pod_secret_refs: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SECRET_REFS),
        description="Env name in the pod -> RunPod secret name; rendered as {{ RUNPOD_SECRET_<name> }}.",
    )
    extra_pod_env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Non-secret extras for the pod env (WAN_720P, GPU_TIER, the stand-in's "
            "COMFY_STANDIN_STEP_SECONDS on the devstack)."
        ),
    )
    ready_deadline_s: float = Field(
        default=300.0, description="How long a launched pod may take until ComfyUI answers."
    )
    prompt_deadline_s: float = Field(
        default=3600.0,
        description="How long one prompt may run before it is interrupted and the pod moves on.",
    )
    r2_object_deadline_s: float = Field(
        default=120.0, description="How long a finished video may take to appear in R2."
    )
    max_pod_lifetime_s: float = Field(
        default=4 * 3600.0,
        description=(
            "The reaper terminates any pod of ours older than this, whatever its run says "
            "(RP_POD_MAX_LIFETIME_S)."
        ),
    )
    settings_problems: list[str] = Field(
        default_factory=list,
        description=(
            "Bad environment settings found when the code location loaded, one line each; while "
            "any is listed every generated_video run fails in validate_requests, before any pod."
        ),
    )
