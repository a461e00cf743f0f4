"""GPU choice by measured cost per video, on the devstack: real runs, real emulator pods at their
GPU type's speed, the instance's own materializations as the measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from rp_devstack.stack import Devstack
from rp_pipeline.defs.costs.assets import gpu_cost_table
from rp_pipeline.defs.costs.sensors import gpu_costs_on_new_videos
from rp_pipeline.integrations.replace import replace_fields
from rp_pipeline.money.cost_table import measured_rows
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    register_requests,
    run_messages,
    tick,
    write_prompts,
)

FAST = "NVIDIA GeForce RTX 4090"
CHEAP_PER_HOUR = "NVIDIA RTX A6000"
STEP_S = 0.1  # the faster type's stand-in step; the cheaper-per-hour one takes 3x as long


@pytest.fixture
def two_gpu_market(devstack: Devstack) -> Any:
    """The cheaper-per-hour type is 3x slower per step; the emulator is restored afterwards."""
    emulator = devstack.emulator
    emulator.set_gpu_offer(FAST, secure_price=0.60, step_seconds=STEP_S)
    emulator.set_gpu_offer(CHEAP_PER_HOUR, secure_price=0.40, step_seconds=3 * STEP_S)
    yield emulator
    emulator.reset()


def on(resources: dict[str, Any], *gpu_types: str) -> dict[str, Any]:
    return {**resources, "runpod": replace_fields(resources["runpod"], gpu_types=list(gpu_types))}


def gpu_of_run(instance: DagsterInstance, run_id: str, keys: list[str]) -> set[str]:
    found = latest_by_partition(instance)
    return {found[k]["gpu_type"] for k in keys}


@pytest.mark.slow  # three runs, one at a third of the speed: about a minute
def test_the_cost_table_finds_the_faster_type_cheaper_per_video_and_the_run_launches_it(
    devstack: Devstack,
    two_gpu_market: Any,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast_keys = write_prompts(prompts_dir, "fast", 3)
    slow_keys = write_prompts(prompts_dir, "slow", 3)
    next_key = write_prompts(prompts_dir, "next", 1)
    register_requests(instance, resources)
    for keys, gpu in ((fast_keys, FAST), (slow_keys, CHEAP_PER_HOUR)):
        result = generate(instance, on(resources, gpu), keys)
        assert result.success
        assert gpu_of_run(instance, result.run_id, keys) == {gpu}

    rows = {r.gpu_type: r for r in measured_rows(instance) if r.workflow == "wan22_ti2v_5b"}
    fast, slow = rows[FAST], rows[CHEAP_PER_HOUR]
    assert (fast.videos, slow.videos) == (3, 3)
    assert (fast.resolution, fast.frames) == ("320x192", "<=33")
    assert slow.median_generation_s is not None and fast.median_generation_s is not None
    assert slow.median_generation_s > 2 * fast.median_generation_s
    assert fast.usd_per_video < slow.usd_per_video, (fast, slow)

    # The table as the UI shows it, and the sensor that refreshes it when videos land.
    shown = materialize([gpu_cost_table], instance=instance)
    assert shown.success
    table = shown.asset_materializations_for_node("gpu_cost_table")[0].metadata["cost_per_video"]
    assert {r.data["gpu_type"] for r in table.value.records} == {FAST, CHEAP_PER_HOUR}
    requested, cursor = tick(gpu_costs_on_new_videos, instance, {})
    assert len(requested.run_requests) == 1
    again, _ = tick(gpu_costs_on_new_videos, instance, {}, cursor)
    assert not getattr(again, "run_requests", None)

    # Preference order would launch the cheaper-per-hour type first; the measured choice does not.
    monkeypatch.setenv("RP_GPU_CHOICE", "cheapest-per-video")
    result = generate(instance, on(resources, CHEAP_PER_HOUR, FAST), next_key)
    assert result.success
    assert gpu_of_run(instance, result.run_id, next_key) == {FAST}
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert (pod["gpu_type_id"], pod["gpu_step_seconds"]) == (FAST, STEP_S)
    [why] = [m for m in run_messages(instance, result.run_id) if m.startswith("GPU order")]
    assert why.startswith(f"GPU order {FAST}, {CHEAP_PER_HOUR} (RP_GPU_CHOICE=cheapest-per-video")
    assert f"{FAST}: ${fast.usd_per_video:.4f}/video" in why


def test_devstack_pods_step_at_their_gpu_speed_unless_a_step_time_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rp_pipeline.defs.resources import generation_settings
    from rp_pipeline.settings import read_settings

    monkeypatch.delenv("COMFY_STANDIN_STEP_SECONDS", raising=False)
    unset = generation_settings("devstack", read_settings())
    assert "COMFY_STANDIN_STEP_SECONDS" not in unset.extra_pod_env
    monkeypatch.setenv("COMFY_STANDIN_STEP_SECONDS", "0.5")
    given = generation_settings("devstack", read_settings())
    assert given.extra_pod_env["COMFY_STANDIN_STEP_SECONDS"] == "0.5"
