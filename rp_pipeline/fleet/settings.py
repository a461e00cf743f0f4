"""How a generation run sizes its pod and how long it waits: one resource, set per environment."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

# Pod env entries that carry secrets are RunPod secret references, resolved by RunPod when the
# container starts, so the key values never transit Dagster (secret references are preferred over plain values).
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
    # At most this many pods at once across all runs of the instance: each pod holds a slot of
    # the instance's `runpod_pods` concurrency pool (limit set from this when the pool has none)
    # until it is terminated. A run waits up to `pod_slot_wait_s` for its first slot.
    max_live_pods: int = 1
    pod_slot_wait_s: float = 900.0
    # A run of N videos asks for ceil(N / videos_per_pod) pods (then capped by the pool and the
    # cost cap): fewer pods = fewer boots to pay for, more pods = a shorter batch.
    videos_per_pod: int = 4
    # A pod that dies mid-batch gives its prompts back to the queue; when no pod of the run is
    # left, up to this many replacement pods are launched (in the dead pod's slot).
    max_replacement_pods: int = 1
    # How often a waiting worker reads the pod's RunPod status (and always when ComfyUI does
    # not answer), so a dead pod is noticed within one poll.
    pod_status_poll_s: float = 10.0
    # The run's lease on each pod (R2 object renewed every lease_s / 3); the pod stops itself
    # when it lapses, e.g. after the run's process was killed.
    pod_lease_s: float = 300.0
    # Terminate is retried (and read back) this long before the pod is reported unconfirmed.
    terminate_confirm_s: float = 60.0
    # R2 errors while collecting a video are retried with backoff this long.
    r2_retry_s: float = 600.0
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
