"""Never pay twice for a video that exists, whatever starts the run (devstack: real pods, real
stand-in, real Dagster). Work is counted where it is paid for: the prompts the pods' ComfyUI
stand-ins ran, from their GPU meters."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetMaterialization, DagsterInstance, RunRequest, build_schedule_context
from dagster._core.instance.ref import InstanceRef

from rp_devstack.local_pods import gpu_meter_path
from rp_devstack.stack import Devstack
from rp_pipeline.defs.videos.schedules import batch_generation
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    register_requests,
    run_batch_processes,
    run_messages,
    write_prompts,
)

REPO = Path(__file__).resolve().parents[2]


def prompts_ran(devstack: Devstack, run_ids: list[str]) -> set[str]:
    """The ComfyUI filename prefixes the pods of these runs rendered (one per prompt)."""
    prefixes: set[str] = set()
    for run_id in run_ids:
        for pod in pods_of_run(devstack.emulator, run_id):
            output = devstack.emulator.state_dir / "pods" / pod["id"] / "workspace"
            meter = gpu_meter_path(output / "ComfyUI" / "output")
            for line in meter.read_text().splitlines() if meter.exists() else []:
                prefixes.update(json.loads(line)["prefixes"])
    return prefixes


def mark_materialized(instance: DagsterInstance, keys: list[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(
            AssetMaterialization("generated_video", partition=key, metadata={"made": "before"})
        )


@pytest.mark.parametrize("started_by", ["schedule", "backfill"])
def test_ten_partitions_of_which_six_exist_pay_for_four(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    started_by: str,
) -> None:
    keys = write_prompts(prompts_dir, f"once-{started_by}", 10)
    register_requests(instance, resources)
    made = [keys[i] for i in (0, 1, 3, 4, 6, 8)]
    pending = [k for k in keys if k not in made]
    mark_materialized(instance, made)
    if started_by == "schedule":
        with build_schedule_context(instance=instance, resources={"r2": resources["r2"]}) as ctx:
            request = batch_generation(ctx)
        assert isinstance(request, RunRequest)
        span = [
            request.tags["dagster/asset_partition_range_start"],
            request.tags["dagster/asset_partition_range_end"],
        ]
        assert span == [pending[0], pending[-1]]
        run_config = request.run_config
        only = run_config["ops"]["generated_video"]["ops"]["validate_requests"]["config"]["only"]
        assert only == pending  # exactly the pending partitions
        result = generate(instance, resources, span, run_config=run_config)
    else:
        span = [keys[0], keys[-1]]
        result = generate(instance, resources, span)
    assert result.success
    ran = prompts_ran(devstack, [result.run_id])
    assert len(ran) == 4, ran
    assert all(any(key in prefix for key in pending) for prefix in ran)
    messages = "\n".join(run_messages(instance, result.run_id))
    if started_by == "backfill":  # the range holds made partitions: each is skipped, said so
        assert "skipping 6 partition(s) already materialized" in messages
    latest = latest_by_partition(instance)
    assert all(latest[k].get("made") == "before" for k in made)  # not made again
    assert all("r2_key" in latest[k] for k in pending)


def test_a_remake_is_asked_for_and_paid_again(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "remake", 1)
    register_requests(instance, resources)
    mark_materialized(instance, [key])
    result = generate(instance, resources, [key], tags={"rp/remake": "true"})
    assert result.success
    assert len(prompts_ran(devstack, [result.run_id])) == 1


def test_the_same_partition_started_twice_at_once_is_generated_once(
    devstack: Devstack, pipeline_env: dict[str, str], prompts_dir: Path, tmp_path: Path
) -> None:
    from rp_pipeline.definitions import resources_for

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    [key] = write_prompts(prompts_dir, "twice", 1)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RP_MAX_PODS": "2"}
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        register_requests(instance, resources_for("devstack"))
    failed = run_batch_processes([key, key], env, {"COMFY_STANDIN_STEP_SECONDS": "0.1"}, tmp_path)
    assert not failed, "\n".join(failed)
    logs = "\n".join(p.read_text(errors="replace")[-4000:] for p in tmp_path.glob("run-*.log"))
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        run_ids = [r.run_id for r in instance.get_runs()]
        assert len(run_ids) >= 2
        assert len(prompts_ran(devstack, run_ids)) == 1, logs
        assert key in latest_by_partition(instance)


def test_videos_a_dead_run_left_in_r2_are_materialized_not_generated(
    devstack: Devstack, resources: dict[str, Any], prompts_dir: Path, tmp_path: Path
) -> None:
    """A run whose videos reached R2 but never got materialized (its process died; here: its
    instance is gone): the next run finds them through the render markers and the receipts."""
    keys = write_prompts(prompts_dir, "orphans", 3)
    first_home, second_home = tmp_path / "first", tmp_path / "second"
    for home in (first_home, second_home):
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(first_home))) as lost:
        register_requests(lost, resources)
        first = generate(lost, resources, keys)
        assert first.success
        sha = {k: v["sha256"] for k, v in latest_by_partition(lost).items()}
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(second_home))) as instance:
        register_requests(instance, resources)
        again = generate(instance, resources, keys)
        assert again.success
        assert prompts_ran(devstack, [again.run_id]) == set()
        assert pods_of_run(devstack.emulator, again.run_id) == []
        latest = latest_by_partition(instance)
        assert {k: latest[k]["sha256"] for k in keys} == sha
        assert all(latest[k]["recovered_from_run"] == first.run_id for k in keys)
        messages = "\n".join(run_messages(instance, again.run_id))
        assert "materialized from there, nothing generated" in messages
