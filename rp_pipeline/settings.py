"""Every setting of the code location: the one module of `rp_pipeline` that reads the environment.

Each knob is one field of `Settings`, declared with `env_setting(NAME, kind, default, doc)`: its
variable, how its text is parsed, its default and what it means. `read_settings()` parses them
all at once and never raises: a bad value leaves the field at its default and adds one line to
`Settings.problems`, e.g. `RP_MAX_PODS must be a whole number >= 1, got 'abc'`. That is how the
code location always loads: the problems are logged, shown on the `GenerationSettings` resource
(`settings_problems`), fail every `generated_video` run in its first op (see
`settings_problems_failure`), make the batch schedule skip and the CLIs exit 2.

Code that reads a knob while it runs (a run's money settings, the request bounds, which RunPod API)
calls `current(field)`: the same parser, raising `SettingError` with the same line.

Secrets reach Dagster only as an `EnvVar` of their name on the resources (run config and the
instance store the name, never the value): `Settings` only says whether the optional ones are
set. `value_of` hands a raw value to a CLI that calls the service itself (its API key).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rp_pipeline.setting_kinds import (
    CRON,
    FLAG,
    IDLE_TIME,
    NAMES,
    SECONDS_TEXT,
    SHOWN_CHARS,
    TEXT,
    Kind,
    SettingError,
    choice,
    number,
    whole,
)

ENVIRONMENTS = ("devstack", "production")
MARKETS = ("on-demand", "interruptible", "interruptible-fallback")
RUNPOD_APIS = ("rest", "graphql")
GPU_CHOICES = ("preference", "cheapest-per-video", "fastest")

# Defaults that are facts about the product, not about one module: each has this one home.
DEFAULT_MARKET = "on-demand"
# 0 keeps the old behaviour (terminate the moment the work is done): idle time costs money, so
# keeping pods warm is a choice made per deployment.
DEFAULT_IDLE_S = 0.0
# WAN 2.2 14B at 1280x704x121 on a 24-48 GB GPU takes on the order of 10-20 minutes.
DEFAULT_VIDEO_S = 900.0
# A new pod bills while it boots: image pull, model load, ComfyUI start.
DEFAULT_BOOT_S = 180.0
# A 1080p clip of 121 frames (~5 s at 24 fps): every shipped template's default (1280x704x121)
# fits with room, while 16384x16384 or 16384 frames (hours of GPU time) do not.
DEFAULT_MAX_PIXELS = 1920 * 1088 * 121
# The shipped templates sample 20 (two experts x 10) or 4 steps; 100 leaves room for quality
# experiments, 10000 (ComfyUI's own limit) would bill a pod for hours.
DEFAULT_MAX_STEPS = 100
DEFAULT_CRON = "0 */6 * * *"
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
DEFAULT_WORKFLOWS_DIR = Path(__file__).resolve().parent.parent / "workflows"
# There is no default image: a pod runs what the user's CI publishes (RP_IMAGE) or what their
# RunPod template names (RUNPOD_TEMPLATE_ID). This repository's CI publishes its image here.
PUBLISHED_IMAGE = "ghcr.io/<owner>/runpod-dagster"
NO_IMAGE = (
    "no image to run: set RP_IMAGE (the image your CI publishes, e.g. "
    f"{PUBLISHED_IMAGE}:latest) or RUNPOD_TEMPLATE_ID (`rp-launch template sync` prints it)"
)


def env_setting(name: str, kind: Kind, default: Any = None, doc: str = "") -> Any:
    """A `Settings` field read from the environment variable `name`."""
    return field(default=default, metadata={"env": name, "kind": kind, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every knob, typed. None means "not set": the resource's own default applies."""

    env: str = env_setting(
        "RP_ENV", choice(*ENVIRONMENTS), "devstack", "devstack (never spends money) or production"
    )
    # RunPod: which API, where, the pod's shape and market.
    runpod_api: str = env_setting(
        "RUNPOD_API",
        choice(*RUNPOD_APIS, aliases={"v2": "rest"}),
        "rest",
        "RunPod API: rest (REST v2) or graphql (needed for interruptible pods)",
    )
    runpod_api_base_url: str | None = env_setting(
        "RUNPOD_API_BASE_URL", TEXT, None, "RunPod API base URL (the devstack's emulator)"
    )
    gpu_types: list[str] | None = env_setting(  # noqa: RUF009 (a field(), not a shared default)
        "RP_GPU_TYPES", NAMES, None, "GPU type ids, in order of preference"
    )
    image: str | None = env_setting(
        "RP_IMAGE", TEXT, None, "the pod's container image (the one your CI publishes)"
    )
    template_id: str | None = env_setting(
        "RUNPOD_TEMPLATE_ID",
        TEXT,
        None,
        "a RunPod template whose image runs when RP_IMAGE is unset",
    )
    max_pod_cost_per_hr: float | None = env_setting(
        "RP_MAX_POD_COST_PER_HR",
        number("a price in $/h"),
        None,
        "refuse GPU types dearer than this",
    )
    network_volume_set: bool = env_setting(
        "RUNPOD_NETWORK_VOLUME_ID",
        TEXT,
        False,
        "network volume id (given to the resource as EnvVar)",
    )
    pod_market: str = env_setting(
        "RP_POD_MARKET", choice(*MARKETS), DEFAULT_MARKET, "on-demand, interruptible or both"
    )
    spot_bid_max: float | None = env_setting(
        "RP_SPOT_BID_MAX", number("a price in $/h per GPU"), None, "highest spot bid per GPU"
    )
    # The run: sizing, guards, leases, pod env.
    enable_r2_sync: bool = env_setting(
        "ENABLE_R2_SYNC", FLAG, True, "the pod's agent uploads ComfyUI's outputs to R2"
    )
    max_total_cost_per_hr: float | None = env_setting(
        "RP_MAX_TOTAL_COST_PER_HR", number("a price in $/h"), None, "all running pods' $/h cap"
    )
    max_pods: int | None = env_setting("RP_MAX_PODS", whole(1), None, "pods at once, all runs")
    videos_per_pod: int | None = env_setting(
        "RP_VIDEOS_PER_POD", whole(1), None, "a run asks for ceil(videos / this) pods"
    )
    pod_lease_s: float | None = env_setting(
        "RP_POD_LEASE_S", number("a number of seconds"), None, "the run's lease on each pod"
    )
    pod_max_lifetime_s: float | None = env_setting(
        "RP_POD_MAX_LIFETIME_S", number("a number of seconds"), None, "the reaper ends older pods"
    )
    wan_720p: str | None = env_setting("WAN_720P", TEXT, None, "passed to the pod")
    gpu_tier: str | None = env_setting("GPU_TIER", TEXT, None, "passed to the pod")
    standin_step_s: str | None = env_setting(
        "COMFY_STANDIN_STEP_SECONDS", SECONDS_TEXT, None, "devstack pods: stand-in step time"
    )
    comfyui_url_set: bool = env_setting(
        "COMFYUI_URL", TEXT, False, "a ComfyUI you run: runs use it instead of pods (EnvVar)"
    )
    comfyui_token_set: bool = env_setting(
        "COMFYUI_TOKEN", TEXT, False, "bearer token for COMFYUI_URL (a secret: EnvVar)"
    )
    # Money: warm pods and the budget (read by each run before its first pod).
    pod_idle_s: float = env_setting(
        "RP_POD_IDLE_S",
        IDLE_TIME,
        DEFAULT_IDLE_S,
        "a finished pod waits this long for the next run (0 = terminate at once)",
    )
    max_run_cost_usd: float | None = env_setting(
        "RP_MAX_RUN_COST_USD", number("an amount in US dollars"), None, "cap per run"
    )
    max_daily_cost_usd: float | None = env_setting(
        "RP_MAX_DAILY_COST_USD", number("an amount in US dollars"), None, "cap per UTC day"
    )
    expected_video_s: float = env_setting(
        "RP_EXPECTED_VIDEO_S", number("a number of seconds"), DEFAULT_VIDEO_S, "pod s per video"
    )
    expected_boot_s: float = env_setting(
        "RP_EXPECTED_BOOT_S", number("a number of seconds"), DEFAULT_BOOT_S, "pod s per boot"
    )
    # GPU choice: which allowed type a run tries first, and how long it waits for stock.
    gpu_choice: str = env_setting(
        "RP_GPU_CHOICE",
        choice(*GPU_CHOICES),
        "preference",
        "order of RP_GPU_TYPES: preference, cheapest-per-video or fastest (measured)",
    )
    gpu_explore_videos: int = env_setting(
        "RP_GPU_EXPLORE_VIDEOS",
        whole(0),
        0,
        "cheapest-per-video: a type measured on fewer videos than this is tried first (0 = never)",
    )
    gpu_max_usd_per_video: float | None = env_setting(
        "RP_GPU_MAX_USD_PER_VIDEO",
        number("an amount in US dollars"),
        None,
        "fastest: skip GPU types measured above this $/video",
    )
    capacity_wait_s: float = env_setting(
        "RP_CAPACITY_WAIT_S",
        number("a number of seconds", above=False),
        0.0,
        "no allowed GPU type in stock: wait this long for one (0 = fail at once)",
    )
    # Requests.
    prompts_dir: Path = env_setting(  # noqa: RUF009 (a field(), not a shared default)
        "RP_PROMPTS_DIR", Kind("a directory", Path), DEFAULT_PROMPTS_DIR, "request files"
    )
    workflows_dir: Path = env_setting(  # noqa: RUF009 (a field(), not a shared default)
        "RP_WORKFLOWS_DIR", Kind("a directory", Path), DEFAULT_WORKFLOWS_DIR, "workflow files"
    )
    node_catalogue_dir: Path | None = env_setting(  # noqa: RUF009 (a field())
        "RP_NODE_CATALOGUE_DIR",
        Kind("a directory", Path),
        None,
        "/object_info snapshots (*.json) workflows are checked against (<workflows>/catalogue)",
    )
    models_manifest: Path | None = env_setting(  # noqa: RUF009 (a field())
        "RP_MODELS_MANIFEST",
        Kind("a file", Path),
        None,
        "the model manifest the pods' image uses, when not the built-in one (MODELS_MANIFEST)",
    )
    max_pixels: int = env_setting(
        "RP_MAX_PIXELS", whole(1), DEFAULT_MAX_PIXELS, "width x height x frames of one request"
    )
    max_steps: int = env_setting(
        "RP_MAX_STEPS", whole(1), DEFAULT_MAX_STEPS, "sampling steps of one request"
    )
    batch_cron: str = env_setting("RP_BATCH_CRON", CRON, DEFAULT_CRON, "batch schedule's cron")
    automation: bool = env_setting(
        "RP_AUTOMATION", FLAG, False, "new request partitions made by declarative automation"
    )
    # R2 (the secrets travel as EnvVar; these only say whether the optional ones are set).
    r2_prefix_set: bool = env_setting("R2_PREFIX", TEXT, False, "key prefix in R2 (EnvVar)")
    r2_public_base_url_set: bool = env_setting(
        "R2_PUBLIC_BASE_URL", TEXT, False, "public URL of the bucket (EnvVar)"
    )
    problems: tuple[str, ...] = ()


_FIELDS = {f.name: f for f in fields(Settings) if "env" in f.metadata}
# For the secret-ish knobs only presence matters: the value itself stays out of Settings.
_PRESENCE = {"network_volume_set", "comfyui_url_set", "comfyui_token_set"}
_PRESENCE |= {"r2_prefix_set", "r2_public_base_url_set"}


def env_name(attr: str) -> str:
    """The variable behind a `Settings` field, e.g. env_name("max_pods") == "RP_MAX_PODS"."""
    return str(_FIELDS[attr].metadata["env"])


def _shown(raw: str) -> str:
    return raw if len(raw) <= SHOWN_CHARS else raw[: SHOWN_CHARS - 3] + "..."


def problem_line(name: str, raw: str, expected: str) -> str:
    if name == "RUNPOD_API":  # the wording its CLI users and docs know
        return f"RUNPOD_API={raw!r} is not a RunPod API: use 'rest' (REST v2, the default) or 'graphql'"
    return f"{name} must be {expected}, got {_shown(raw)!r}"


def _parse(attr: str, env: Mapping[str, str]) -> Any:
    """The field's value from `env` (its default when unset or blank); SettingError if bad."""
    spec = _FIELDS[attr]
    name, kind = spec.metadata["env"], spec.metadata["kind"]
    raw = (env.get(name) or "").strip()
    if attr in _PRESENCE:
        return bool(raw)
    if not raw:
        return spec.default
    try:
        return kind.parse(raw)
    except (ValueError, KeyError):
        raise SettingError(problem_line(name, raw, kind.expected)) from None


def _environ(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def read_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Every knob from `env` (default: this process's environment); never raises."""
    source = _environ(env)
    values: dict[str, Any] = {}
    problems: list[str] = []
    for attr in _FIELDS:
        try:
            values[attr] = _parse(attr, source)
        except SettingError as exc:
            problems.append(str(exc))
    if (
        values.get("env") == "production"
        and not values.get("image")
        and not values.get("template_id")
    ):
        problems.append(NO_IMAGE)
    return Settings(**values, problems=tuple(problems))


def current(attr: str, env: Mapping[str, str] | None = None) -> Any:
    """One knob as it is set now; SettingError (one line) when its value is bad."""
    return _parse(attr, _environ(env))


# ---------------------------------------------------------------- the environment itself


def load_env_file(path: str | None = None) -> None:
    """Apply the devstack's env file (`export NAME=value` lines, RP_DEVSTACK_ENV_FILE when no
    path is given) without overriding what the shell already set."""
    path = path if path is not None else os.environ.get("RP_DEVSTACK_ENV_FILE")
    if not path or not Path(path).is_file():
        return
    for line in Path(path).read_text().splitlines():
        parts = shlex.split(line, comments=True)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            name, value = parts[1].split("=", 1)
            os.environ.setdefault(name, value)


def set_defaults(values: Mapping[str, str]) -> None:
    """Set variables the environment does not set yet (the demo's fleet size)."""
    for name, value in values.items():
        os.environ.setdefault(name, value)


def value_of(name: str) -> str | None:
    """A variable's raw value (None when unset or empty), for a CLI that calls a service itself:
    its API key, its R2 keys. Dagster resources never take these: they take `EnvVar(name)`."""
    return os.environ.get(name) or None


def process_environment() -> Mapping[str, str]:
    """This process's whole environment, for the service wrapper that renders dagster.yaml
    from it and checks the Postgres it names."""
    return os.environ


def r2_from_environment() -> Any:
    """rp_agent's `R2Settings` from the environment; `rp_agent.r2.R2ConfigError` when unset."""
    from rp_agent.r2 import R2Settings

    return R2Settings.from_env()


def r2_prefix() -> str:
    from rp_agent.keys import prefix_from_env

    return prefix_from_env()


# ---------------------------------------------------------------- problems, surfaced


def settings_problems_failure(problems: Sequence[str]) -> Exception | None:
    """The Failure a `generated_video` run raises in its first op when a setting is bad (None
    when every setting is good). Call at the top of validate_requests:

        if failure := settings_problems_failure(settings.settings_problems):
            raise failure
    """
    if not problems:
        return None
    from dagster import Failure, MetadataValue

    return Failure(
        "no pod was launched: " + "; ".join(problems) + " (fix the environment, reload the "
        "code location)",
        metadata={"settings_problems": MetadataValue.text("\n".join(problems))},
    )


def exit_on_problems(problems: Sequence[str], program: str) -> None:
    """For CLIs: one line per bad setting on stderr, then exit 2."""
    if problems:
        for line in problems:
            print(f"{program}: {line}", file=sys.stderr)
        raise SystemExit(2)
