"""Constants and builders for the RunPod layer tests (no package: `runpod` would shadow the SDK)."""

from __future__ import annotations

from rp_pipeline.integrations.runpod.resource import PodSpec
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token

GPU_4090 = "NVIDIA GeForce RTX 4090"
GPU_A6000 = "NVIDIA RTX A6000"
GPU_L40S = "NVIDIA L40S"


def spec(**overrides: object) -> PodSpec:
    """A pod spec whose env carries a fresh pod token (as every launcher puts there: without
    one the pod's proxy refuses every request, readiness probes included) plus `env=`."""
    base = PodSpec(image="local/comfyui:test", gpu_types=[GPU_4090])
    for key, value in overrides.items():
        setattr(base, key, value)
    base.env = {POD_TOKEN_ENV: new_pod_token(), **base.env}
    return base
