"""generated_video end to end on the devstack: real pods (local processes), real ComfyUI
stand-in, real rp-agent uploading to a real S3 server, a real Dagster instance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from rp_devstack.stack import Devstack
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.video_requests.store import load_request
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    preview_and_catalog,
    r2_now,
    register_requests,
    settled_by_partition,
    with_settings,
    write_prompts,
)

REQUIRED_METADATA = {
    "r2_key", "r2_url", "size_bytes", "sha256", "width", "height", "frames", "fps",
    "duration_s", "generation_time_s", "queue_wait_s", "upload_latency_s", "pod_id", "gpu_type",
    "cost_usd", "pod_seconds", "prompt", "negative_prompt", "seed", "workflow", "workflow_hash",
    "poster", "r2_source",
}  # fmt: skip


def test_single_partition_materializes_with_full_metadata(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "single", 1)
    register_requests(instance, resources)
    result = generate(instance, resources, [key])
    assert result.success
    md = latest_by_partition(instance)[key]
    assert set(md) >= REQUIRED_METADATA
    assert md["r2_source"] == "agent"
    assert (md["width"], md["height"], md["frames"]) == (320, 192, 9)
    assert md["upload_latency_s"] is not None and md["upload_latency_s"] >= 0
    assert md["generation_time_s"] > 0
    assert "data:image/png;base64," in md["poster"]
    assert md["seed"] == 100
    r2 = r2_now()
    head = r2.head(md["r2_key"])
    assert head is not None and head.size == md["size_bytes"]
    assert head.metadata["sha256"] == md["sha256"]
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["desired_status"] == "TERMINATED" and pod["id"] == md["pod_id"]
    assert load_request(r2, key) is not None


@pytest.mark.slow
def test_batch_of_three_shares_one_pod_and_its_cost(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys = write_prompts(prompts_dir, "batch", 3)
    register_requests(instance, resources)
    result = generate(instance, resources, keys)
    assert result.success
    pods = pods_of_run(devstack.emulator, result.run_id)
    assert len(pods) == 1, "N requests must cost one pod boot"
    assert pods[0]["desired_status"] == "TERMINATED"
    found = latest_by_partition(instance)
    assert set(found) == set(keys)
    assert len({found[k]["r2_key"] for k in keys}) == 3
    assert {found[k]["pod_id"] for k in keys} == {pods[0]["id"]}
    assert {found[k]["batch_size"] for k in keys} == {3}
    # Settled shares (observations after terminate) add up to the pod's bill: to the cent
    # against the emulator's own billing, to rounding against the pod's billed seconds.
    settled = settled_by_partition(instance)
    assert set(settled) == set(keys)
    total = sum(settled[k]["cost_usd"] for k in keys)
    assert total == pytest.approx(pods[0]["cost"], abs=0.01)
    md = settled[keys[0]]
    assert total == pytest.approx(
        pods[0]["cost_per_hr"] * md["pod_billed_s"] / 3600, abs=len(keys) * 5e-7 + 1e-6
    )
    # downstream: previews and the catalogue cover all three
    assert preview_and_catalog(instance, resources).success
    index = r2_now().get_bytes("catalog/index.json")
    assert all(found[k]["r2_key"].encode() in index for k in keys)


@pytest.mark.slow
def test_sync_disabled_falls_back_to_pipeline_upload(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "nosync", 1)
    register_requests(instance, resources)
    result = generate(instance, with_settings(resources, enable_r2_sync=False), [key])
    assert result.success
    md = latest_by_partition(instance)[key]
    assert md["r2_source"] == "pipeline_fallback"
    assert r2_now().head(md["r2_key"]).metadata["uploaded-by"] == "pipeline"
    assert all(
        p["desired_status"] == "TERMINATED" for p in pods_of_run(devstack.emulator, result.run_id)
    )


def test_comfyui_execution_error_fails_run_and_terminates_pod(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    [key] = write_prompts(prompts_dir, "fault", 1)
    register_requests(instance, resources)
    faulty = with_settings(resources, extra_pod_env={"COMFY_STANDIN_FAULT": "execution_error"})
    result = generate(instance, faulty, [key])
    assert not result.success
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["desired_status"] == "TERMINATED"
    assert key not in latest_by_partition(instance)


def test_invalid_request_from_launch_config_launches_no_pod(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    instance.add_dynamic_partitions("video_requests", ["ui-bad-request"])
    pods_before = len(devstack.emulator.pods())
    config = {"requests": {"ui-bad-request": {"prompt": "x", "params": {"width": 7, "frames": -1}}}}
    result = materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=instance,
        resources=resources,
        partition_key="ui-bad-request",
        run_config={"ops": {"generated_video": {"ops": {"validate_requests": {"config": config}}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("validate_requests")
    assert "no pod was launched" in str(failure.event_specific_data.error)
    assert len(devstack.emulator.pods()) == pods_before


def test_pod_slot_limit_holds_a_second_pod_back(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    """At most max_live_pods pods at once: another run holding the pool's only slot keeps this
    run from launching, and it says so."""
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    from rp_pipeline.fleet.slots import POD_POOL

    [key] = write_prompts(prompts_dir, "slot", 1)
    register_requests(instance, resources)
    # The other run is alive (it just wrote an event): launching, so its slot is not freed.
    other = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    instance.report_engine_event("claiming a pod slot", other)
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POD_POOL, 1)
    assert storage.claim_concurrency_slot(POD_POOL, other.run_id, "pod-0").is_claimed
    try:
        result = generate(instance, with_settings(resources, pod_slot_wait_s=1.0), [key])
    finally:
        storage.free_concurrency_slot_for_step(other.run_id, "pod-0")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("launch_pod")
    assert "held by other runs" in str(failure.event_specific_data.error)
    assert pods_of_run(devstack.emulator, result.run_id) == []
    # the refused run left no claim behind
    info = storage.get_concurrency_info(POD_POOL)
    assert [c.run_id for c in info.claimed_slots] == []
