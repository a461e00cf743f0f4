"""Settings have one home: the code location loads for every environment, and a bad value in any
setting is one line naming the variable, never a traceback at load: the location still loads,
the resource shows the line, generation runs fail in their first op before any RunPod call, the
batch schedule skips and the CLIs exit 2."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, SkipReason, build_schedule_context

from rp_devstack.stack import Devstack
from rp_pipeline.settings import ENVIRONMENTS, NO_IMAGE, read_settings
from tests.pipeline.helpers import generate, pods_of_run, register_requests, write_prompts
from tests.tools import uv_command

REPO = Path(__file__).resolve().parents[2]

# One bad value of each kind: (variable, value, the one line it gives).
BAD = {
    "whole number": ("RP_MAX_PODS", "abc", "RP_MAX_PODS must be a whole number >= 1, got 'abc'"),
    "price": (
        "RP_MAX_TOTAL_COST_PER_HR",
        "cheap",
        "RP_MAX_TOTAL_COST_PER_HR must be a price in $/h > 0, got 'cheap'",
    ),
    "flag": (
        "ENABLE_R2_SYNC",
        "maybe",
        "ENABLE_R2_SYNC must be true or false (also 1/0, yes/no, on/off), got 'maybe'",
    ),
    "environment": ("RP_ENV", "prod", "RP_ENV must be one of devstack, production, got 'prod'"),
    "api": (
        "RUNPOD_API",
        "soap",
        "RUNPOD_API='soap' is not a RunPod API: use 'rest' (REST v2, the default) or 'graphql'",
    ),
}
# Settings that are each valid but together cannot run: refused the same way, before any pod.
UNRUNNABLE = {"no image": ("RP_ENV", "production", NO_IMAGE)}
# What production needs in the environment to load (the secrets' names; values never read).
PRODUCTION_ENV = {
    "RUNPOD_API_KEY": "rpa-test",
    "R2_ENDPOINT": "https://account.r2.cloudflarestorage.com",
    "R2_BUCKET": "videos",
    "R2_ACCESS_KEY_ID": "key-id",
    "R2_SECRET_ACCESS_KEY": "secret",
    # There is no default image: production runs what the user's CI publishes.
    "RP_IMAGE": "ghcr.io/acme/runpod-dagster:1.0",
}


def settings_resource(defs: Any) -> Any:
    return defs.resources["settings"]


@pytest.fixture
def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No knob of ours set, so each test starts from the defaults."""
    for name in [n for n in os.environ if n.startswith(("RP_", "RUNPOD_", "R2_", "COMFY"))]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("ENABLE_R2_SYNC", raising=False)
    return monkeypatch


# ---------------------------------------------------------------- every environment loads


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_definitions_load_for_every_environment(
    env: str, clean_settings_env: pytest.MonkeyPatch
) -> None:
    from rp_pipeline.definitions import build_definitions

    for name, value in PRODUCTION_ENV.items():
        clean_settings_env.setenv(name, value)
    clean_settings_env.setenv("RP_ENV", env)
    defs = build_definitions()
    repo = defs.get_repository_def()  # resolves every definition, as loading the location does
    assert {"generate_videos", "preview_videos"} <= set(repo.job_names)
    resources = defs.resources
    assert resources["settings"].settings_problems == []
    if env == "production":  # real money: SECURE cloud, a per-pod price cap, 5-minute leases
        assert resources["runpod"].cloud_type == "SECURE"
        assert resources["runpod"].max_cost_per_hr == 2.5
        assert resources["settings"].pod_lease_s == 300.0
    else:  # short leases and deadlines: a broken setup fails in seconds
        assert resources["settings"].pod_lease_s == 60.0
        assert resources["settings"].prompt_deadline_s == 300.0


def test_typed_values_reach_the_resources(clean_settings_env: pytest.MonkeyPatch) -> None:
    from rp_pipeline.definitions import build_definitions

    for name, value in {
        "RP_MAX_PODS": "3",
        "RP_VIDEOS_PER_POD": "2",
        "RP_MAX_TOTAL_COST_PER_HR": "7.5",
        "RP_POD_LEASE_S": "90",
        "ENABLE_R2_SYNC": "off",
        "RP_GPU_TYPES": "NVIDIA A40, NVIDIA L4",
        "RP_MAX_POD_COST_PER_HR": "1.2",
    }.items():
        clean_settings_env.setenv(name, value)
    resources = build_definitions("devstack").resources
    settings, runpod = resources["settings"], resources["runpod"]
    assert (settings.max_live_pods, settings.videos_per_pod) == (3, 2)
    assert (settings.max_total_cost_per_hr, settings.pod_lease_s) == (7.5, 90.0)
    assert settings.enable_r2_sync is False
    assert runpod.gpu_types == ["NVIDIA A40", "NVIDIA L4"] and runpod.max_cost_per_hr == 1.2


# ---------------------------------------------------------------- a bad value: one line, no crash


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_value_is_one_line_and_the_location_still_loads(
    kind: str, clean_settings_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rp_pipeline.definitions import build_definitions

    name, value, line = BAD[kind]
    clean_settings_env.setenv(name, value)
    assert read_settings().problems == (line,)
    # Another test's logging setup (a fileConfig in a migration) may have disabled the logger.
    logger = logging.getLogger("rp_pipeline.defs.resources")
    clean_settings_env.setattr(logger, "disabled", False)
    clean_settings_env.setattr(logger, "propagate", True)
    # At this logger, whatever level an earlier in-process CLI run left on its parents.
    with caplog.at_level(logging.WARNING, logger=logger.name):
        defs = build_definitions()
    defs.get_repository_def()
    # The location loads with the field's default, and shows the line on the resource.
    assert settings_resource(defs).settings_problems == [line]
    assert [r.getMessage() for r in caplog.records if line in r.getMessage()] == [
        f"bad setting, its default is used until fixed: {line}"
    ]


def test_a_long_bad_value_is_cut_in_its_line() -> None:
    [line] = read_settings({"RP_MAX_STEPS": "9" * 30 + "x" * 200}).problems
    assert line.startswith("RP_MAX_STEPS must be a whole number >= 1, got '999")
    assert line.endswith("...'") and len(line) < 120


def test_the_code_location_loads_as_the_user_checks_it(tmp_path: Path) -> None:
    """`dg check defs` (what a user runs) with a bad value of every kind at once: green, no
    traceback, one warning line per bad value."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    env |= {name: value for name, value, _ in BAD.values()}
    env["RP_BATCH_CRON"] = "every hour"
    proc = subprocess.run(
        [*uv_command(), "run", "dg", "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "All definitions loaded successfully" in out and "Traceback" not in out
    for _, _, line in BAD.values():
        assert out.count(line) == 1, (line, out)
    assert out.count("RP_BATCH_CRON must be a cron expression") == 1, out


def test_the_batch_schedule_skips_naming_the_bad_value(
    clean_settings_env: pytest.MonkeyPatch, instance: DagsterInstance
) -> None:
    from rp_pipeline.defs.videos.schedules import batch_generation
    from rp_pipeline.integrations.r2.resource import R2Resource

    name, value, line = BAD["whole number"]
    clean_settings_env.setenv(name, value)
    # Never contacted: the schedule skips before it reads R2.
    r2 = R2Resource(
        endpoint="http://127.0.0.1:9", bucket="b", access_key_id="k", secret_access_key="s"
    )
    with build_schedule_context(instance=instance, resources={"r2": r2}) as context:
        result = batch_generation(context)
    assert isinstance(result, SkipReason)
    assert result.skip_message == f"bad settings, no run requested: {line}"


def test_the_demo_cli_exits_2_with_the_line(
    clean_settings_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rp_pipeline.tools import demo

    name, value, line = BAD["flag"]
    clean_settings_env.setenv(name, value)
    with pytest.raises(SystemExit) as exit_:
        demo.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"rp-demo: {line}\n"


# ---------------------------------------------------------------- a run fails in its first op


@pytest.mark.parametrize("kind", sorted(BAD | UNRUNNABLE))
def test_a_run_fails_in_validate_requests_with_the_line_and_no_runpod_call(
    kind: str,
    devstack: Devstack,
    instance: DagsterInstance,
    prompts_dir: Path,
    pipeline_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rp_pipeline.definitions import resources_for

    name, value, line = (BAD | UNRUNNABLE)[kind]
    monkeypatch.setenv(name, value)
    resources = resources_for()
    keys = write_prompts(prompts_dir, f"bad-{kind.replace(' ', '-')}", 1)
    register_requests(instance, resources)
    before = devstack.emulator.request_counts()
    result = generate(instance, resources, keys)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("validate_requests"), failure.step_key
    message = str(failure.event_specific_data.error.message)
    assert line in message and "no pod was launched" in message, message
    assert devstack.emulator.request_counts() == before, "RunPod was called"
    assert pods_of_run(devstack.emulator, result.run_id) == []
