"""The resources of the code location, chosen once per environment from `rp_pipeline.settings`.

`devstack` (default: never spends money) points RunPod and R2 at whatever the env names say,
which is what `rp-devstack up` writes; `production` uses real RunPod + Cloudflare R2 with the
same names, on SECURE cloud with a per-pod price cap. Each value comes typed from `Settings`;
secrets only ever travel as `EnvVar`s, so run config and the instance store their names.
"""

from __future__ import annotations

import logging
from typing import Any

from dagster import EnvVar

from rp_agent.keys import DEFAULT_PREFIX, PREFIX_ENV
from rp_agent.lease import DEFAULT_LEASE_S
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import RunPodResource
from rp_pipeline.settings import ENVIRONMENTS, Settings, load_env_file, read_settings

log = logging.getLogger(__name__)

# What the devstack's pods report as their image (they run the ComfyUI stand-in).
DEVSTACK_IMAGE = "rp-devstack/comfyui-standin:local"
# The devstack's leases are short, so a killed run's pods end within a minute or two.
DEVSTACK_LEASE_S = 60.0
# Production pods have a price cap unless RP_MAX_POD_COST_PER_HR says otherwise.
PRODUCTION_POD_COST_PER_HR = 2.5


def _given(**options: Any) -> dict[str, Any]:
    """The options that are set: an unset setting leaves the resource's own default."""
    return {name: value for name, value in options.items() if value is not None}


def runpod_resource(env: str, settings: Settings) -> RunPodResource:
    options = _given(
        gpu_types=settings.gpu_types,
        image=settings.image,
        template_id=settings.template_id,
        max_cost_per_hr=settings.max_pod_cost_per_hr,
    )
    if env == "devstack":
        options["poll_interval_s"] = 0.5  # local pods boot in about a second
        # Devstack pods run the ComfyUI stand-in whatever the image says.
        options.setdefault("image", DEVSTACK_IMAGE)
    else:
        options["cloud_type"] = "SECURE"
        options.setdefault("max_cost_per_hr", PRODUCTION_POD_COST_PER_HR)
    return RunPodResource(
        api_key=EnvVar("RUNPOD_API_KEY"),
        network_volume_id=EnvVar("RUNPOD_NETWORK_VOLUME_ID")
        if settings.network_volume_set
        else None,
        **options,
    )


def generation_settings(env: str, settings: Settings) -> GenerationSettings:
    options = _given(
        max_total_cost_per_hr=settings.max_total_cost_per_hr,
        max_live_pods=settings.max_pods,
        videos_per_pod=settings.videos_per_pod,
        max_pod_lifetime_s=settings.pod_max_lifetime_s,
    )
    lease_default = DEVSTACK_LEASE_S if env == "devstack" else DEFAULT_LEASE_S
    extra = _given(WAN_720P=settings.wan_720p, GPU_TIER=settings.gpu_tier)
    if env == "devstack":
        # The stand-in renders in well under a second per step; deadlines are short so a
        # broken setup fails in seconds, not minutes.
        # The stand-in's step time only when set: else each pod steps at its GPU type's speed
        # (the emulator's per-type step time), so GPU types differ as real ones do.
        extra |= _given(COMFY_STANDIN_STEP_SECONDS=settings.standin_step_s)
        options |= {
            "ready_deadline_s": 120.0,
            "prompt_deadline_s": 300.0,
            "r2_object_deadline_s": 45.0,
            "pod_status_poll_s": 2.0,
        }
    return GenerationSettings(
        enable_r2_sync=settings.enable_r2_sync,
        pod_lease_s=settings.pod_lease_s or lease_default,
        extra_pod_env=extra,
        settings_problems=list(settings.problems),
        **options,
    )


def comfyui_resource(env: str, settings: Settings) -> ComfyUIResource:
    """One ComfyUI resource for every client of a run: timeouts and deadlines in one place."""
    # COMFYUI_URL: a ComfyUI the user runs; the runs then use it instead of launching pods.
    options: dict[str, Any] = {
        "external_url": EnvVar("COMFYUI_URL") if settings.comfyui_url_set else None,
        "external_token": EnvVar("COMFYUI_TOKEN") if settings.comfyui_token_set else None,
    }
    if env == "devstack":
        # Stand-in prompts take seconds: poll history often so completion is seen at once.
        options |= {"poll_interval_s": 0.5, "unreachable_grace_s": 30.0}
    return ComfyUIResource(**options)


def r2_resource(settings: Settings) -> R2Resource:
    """R2 whose values resolve from the environment at run time (never stored)."""
    return R2Resource(
        endpoint=EnvVar("R2_ENDPOINT"),
        bucket=EnvVar("R2_BUCKET"),
        access_key_id=EnvVar("R2_ACCESS_KEY_ID"),
        secret_access_key=EnvVar("R2_SECRET_ACCESS_KEY"),
        prefix=EnvVar(PREFIX_ENV) if settings.r2_prefix_set else DEFAULT_PREFIX,
        public_base_url=EnvVar("R2_PUBLIC_BASE_URL") if settings.r2_public_base_url_set else None,
    )


def resources_for(env: str | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """The resources for `env` (default: RP_ENV) from `settings` (default: read them now)."""
    settings = settings or read_settings()
    env = env or settings.env
    if env not in ENVIRONMENTS:
        raise ValueError(f"RP_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
    return {
        "runpod": runpod_resource(env, settings),
        "r2": r2_resource(settings),
        "settings": generation_settings(env, settings),
        "comfyui": comfyui_resource(env, settings),
    }


def load_resources(env: str | None = None) -> dict[str, Any]:
    """What the code location loads with: the devstack's env file applied (RP_DEVSTACK_ENV_FILE),
    every setting read once, each bad one logged as one warning line (the resources keep that
    field's default; `GenerationSettings.settings_problems` carries the lines to the runs)."""
    load_env_file()
    settings = read_settings()
    for problem in settings.problems:
        log.warning("bad setting, its default is used until fixed: %s", problem)
    return resources_for(env, settings)
