"""The code location: assets, jobs, sensors, schedule, and resources chosen once per environment.

`RP_ENV=devstack` (default: never spends money) points RunPod and R2 at whatever the env names
say, which is what `rp-devstack up` writes (`source DIR/env`, or set RP_DEVSTACK_ENV_FILE=DIR/env
and this module reads it). `RP_ENV=production` uses real RunPod + Cloudflare R2 with the same
names. Secrets only ever travel as `EnvVar`s: run config and the instance store their names.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from dagster import Definitions, EnvVar, in_process_executor

from rp_pipeline.defs.jobs import generate_videos, preview_videos
from rp_pipeline.defs.previews.assets import r2_external_outputs, video_catalog, video_preview
from rp_pipeline.defs.previews.sensors import r2_new_objects
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.teardown.sensors import (
    pod_reaper,
    terminate_pods_of_canceled_run,
    terminate_pods_of_failed_run,
)
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.checks import video_checks
from rp_pipeline.defs.videos.schedules import batch_generation
from rp_pipeline.fleet.leases import DEFAULT_LEASE_S
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import RunPodResource

ENVIRONMENTS = ("devstack", "production")


def load_env_file(path: str | None) -> None:
    """Apply `export NAME=value` lines (the devstack env file) without overriding the shell."""
    if not path or not Path(path).is_file():
        return
    for line in Path(path).read_text().splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            name, value = parts[1].split("=", 1)
            os.environ.setdefault(name, value)


def _optional_env(name: str) -> Any:
    return EnvVar(name) if os.environ.get(name) else None


def _csv_env(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    return [item.strip() for item in raw.split(",") if item.strip()] if raw else None


def runpod_resource(env: str) -> RunPodResource:
    options: dict[str, Any] = {
        "api_key": EnvVar("RUNPOD_API_KEY"),
        "network_volume_id": _optional_env("RUNPOD_NETWORK_VOLUME_ID"),
    }
    if gpu_types := _csv_env("RP_GPU_TYPES"):
        options["gpu_types"] = gpu_types
    if os.environ.get("RP_IMAGE"):
        options["image"] = os.environ["RP_IMAGE"]
    if os.environ.get("RP_MAX_POD_COST_PER_HR"):
        options["max_cost_per_hr"] = float(os.environ["RP_MAX_POD_COST_PER_HR"])
    if env == "devstack":
        options["poll_interval_s"] = 0.5  # local pods boot in about a second
    else:
        options["cloud_type"] = "SECURE"
        options.setdefault("max_cost_per_hr", 2.5)
    return RunPodResource(**options)


def generation_settings(env: str) -> GenerationSettings:
    options: dict[str, Any] = {
        "enable_r2_sync": os.environ.get("ENABLE_R2_SYNC", "true").lower() not in {"0", "false"},
    }
    if os.environ.get("RP_MAX_TOTAL_COST_PER_HR"):
        options["max_total_cost_per_hr"] = float(os.environ["RP_MAX_TOTAL_COST_PER_HR"])
    if os.environ.get("RP_MAX_PODS"):
        options["max_live_pods"] = int(os.environ["RP_MAX_PODS"])
    if os.environ.get("RP_VIDEOS_PER_POD"):
        options["videos_per_pod"] = int(os.environ["RP_VIDEOS_PER_POD"])
    # The devstack's leases are short, so a killed run's pods end within a minute or two.
    lease_default = 60.0 if env == "devstack" else DEFAULT_LEASE_S
    options["pod_lease_s"] = float(os.environ.get("RP_POD_LEASE_S") or lease_default)
    if os.environ.get("RP_POD_MAX_LIFETIME_S"):
        options["max_pod_lifetime_s"] = float(os.environ["RP_POD_MAX_LIFETIME_S"])
    extra = {name: os.environ[name] for name in ("WAN_720P", "GPU_TIER") if os.environ.get(name)}
    if env == "devstack":
        # The stand-in renders in well under a second per step; deadlines are short so a
        # broken setup fails in seconds, not minutes.
        extra["COMFY_STANDIN_STEP_SECONDS"] = os.environ.get("COMFY_STANDIN_STEP_SECONDS", "0.02")
        options |= {
            "ready_deadline_s": 120.0,
            "prompt_deadline_s": 300.0,
            "r2_object_deadline_s": 45.0,
            "pod_status_poll_s": 2.0,
        }
    options["extra_pod_env"] = extra
    return GenerationSettings(**options)


def comfyui_resource(env: str) -> ComfyUIResource:
    """One ComfyUI resource for every client of a run: timeouts and deadlines in one place."""
    # COMFYUI_URL: a ComfyUI the user runs; the runs then use it instead of launching pods.
    options: dict[str, Any] = {
        "external_url": _optional_env("COMFYUI_URL"),
        "external_token": _optional_env("COMFYUI_TOKEN"),
    }
    if env == "devstack":
        # Stand-in prompts take seconds: poll history often so completion is seen at once.
        options |= {"poll_interval_s": 0.5, "unreachable_grace_s": 30.0}
    return ComfyUIResource(**options)


def resources_for(env: str) -> dict[str, Any]:
    if env not in ENVIRONMENTS:
        raise ValueError(f"RP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    return {
        "runpod": runpod_resource(env),
        "r2": R2Resource.from_env(),
        "settings": generation_settings(env),
        "comfyui": comfyui_resource(env),
    }


def build_definitions(env: str | None = None) -> Definitions:
    load_env_file(os.environ.get("RP_DEVSTACK_ENV_FILE"))
    env = env or os.environ.get("RP_ENV", "devstack")
    return Definitions(
        assets=[video_requests, generated_video, video_preview, video_catalog, r2_external_outputs],
        asset_checks=video_checks,
        jobs=[generate_videos, preview_videos],
        schedules=[batch_generation],
        sensors=[
            r2_new_objects,
            pod_reaper,
            terminate_pods_of_failed_run,
            terminate_pods_of_canceled_run,
        ],
        resources=resources_for(env),
        # One process per run: ops hand the pod over in memory-cheap pickles, cancellation
        # reaches the running op as DagsterExecutionInterruptedError, and 2-core boxes stay calm.
        executor=in_process_executor,
    )


defs = build_definitions()
