"""A run on a fleet of pods: fan-out, early materializations, failure isolation, dead pods,
the pod limit under simultaneous runs, leases. Real devstack pods, real Dagster instance."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance
from dagster._core.instance.ref import InstanceRef

from rp_agent.keys import lease_key
from rp_devstack.stack import Devstack
from rp_pipeline.definitions import resources_for
from rp_pipeline.fleet.leases import LeaseKeeper, read_lease
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    materialization_times,
    pods_of_run,
    r2_now,
    register_requests,
    run_batch_processes,
    run_messages,
    settled_by_partition,
    with_settings,
    write_prompts,
)

# 20 sampler steps of 0.1 s: a video takes ~2 s, long enough for a pod to hold a queue.
SLOW = {"COMFY_STANDIN_STEP_SECONDS": "0.1"}
# Stricter than `Pod.is_gone` (which also takes EXITED): every pod of a run, a crashed one too,
# must have been terminated by the run (an EXITED pod stays on the account until terminated).
GONE = {"TERMINATED"}
REPO = Path(__file__).resolve().parents[2]


def fleet_resources(resources: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return with_settings(resources, extra_pod_env=dict(SLOW), **changes)


def test_eight_videos_fan_out_and_materialize_as_they_land(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys = write_prompts(prompts_dir, "fan", 8)
    register_requests(instance, resources)
    result = generate(instance, fleet_resources(resources, max_live_pods=4), keys)
    assert result.success
    pods = pods_of_run(devstack.emulator, result.run_id)
    assert len(pods) >= 2, "8 videos with RP_MAX_PODS=4 must use more than one pod"
    assert all(p["desired_status"] in GONE for p in pods)
    found = latest_by_partition(instance)
    assert set(found) >= set(keys)
    used = {found[k]["pod_id"] for k in keys}
    assert len(used) >= 2, "the videos must be spread over the pods"
    # The first video is materialized while the batch is still being generated: before the
    # last video's file was even closed on its pod (the agent's close-time in R2).
    times = materialization_times(instance, result.run_id)
    assert len(times) == 8
    r2 = r2_now()
    closed = [float(r2.head(found[k]["r2_key"]).metadata["close-time"]) for k in keys]
    assert times[0] < max(closed)
    # Settled costs of all partitions add up to the billed cost of the run's pods.
    settled = settled_by_partition(instance)
    assert sum(settled[k]["cost_usd"] for k in keys) == pytest.approx(
        sum(p["cost"] for p in pods), abs=0.01
    )
    # Leases are removed with their pods.
    assert all(r2.head(lease_key(p["id"], r2.prefix)) is None for p in pods)


def _generate_crashing_the_first_pod(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    tag: str,
    count: int,
    **changes: Any,
) -> tuple[list[str], Any, list[str]]:
    """Generate `count` new prompts on a fleet while the pod that produced the run's first
    video is crashed right after that video was materialized: the partition keys, the run's
    result and the crashed pod's id."""
    keys = write_prompts(prompts_dir, tag, count)
    register_requests(instance, resources)
    crashed: list[str] = []

    def watch() -> None:
        give_up = time.monotonic() + 120
        while time.monotonic() < give_up:
            records = instance.fetch_materializations(AssetKey("generated_video"), limit=50)
            for record in records.records:
                pod_id = getattr(record.asset_materialization.metadata["pod_id"], "value", None)
                pod_id = pod_id or str(record.asset_materialization.metadata["pod_id"])
                devstack.emulator.crash_pod(pod_id)
                crashed.append(pod_id)
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = generate(instance, fleet_resources(resources, **changes), keys)
    watcher.join(timeout=5)
    assert crashed, "the watcher never saw a materialization"
    return keys, result, crashed


def test_dead_pod_hands_its_prompts_to_the_other_pod(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys, result, crashed = _generate_crashing_the_first_pod(
        devstack, instance, resources, prompts_dir, "dies", 4, max_live_pods=2, videos_per_pod=2
    )
    found = latest_by_partition(instance)
    assert set(found) >= set(keys), "every video survives the death of one pod"
    assert result.success
    pods = pods_of_run(devstack.emulator, result.run_id)
    assert all(p["desired_status"] in GONE for p in pods)
    messages = "\n".join(run_messages(instance, result.run_id))
    assert "the pod died: RunPod reports it EXITED; last log lines: " in messages
    assert "go back to the queue" in messages
    survivors = {found[k]["pod_id"] for k in keys} - set(crashed)
    assert survivors, "the other pod produced the dead pod's unfinished videos"


def test_last_pod_dying_gets_a_replacement(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys, result, _ = _generate_crashing_the_first_pod(
        devstack, instance, resources, prompts_dir, "replace", 3, max_live_pods=1
    )
    assert result.success
    found = latest_by_partition(instance)
    assert set(found) >= set(keys)
    pods = pods_of_run(devstack.emulator, result.run_id)
    assert len(pods) == 2, "one pod died, one replacement"
    assert all(p["desired_status"] in GONE for p in pods)
    assert {found[k]["pod_id"] for k in keys} == {p["id"] for p in pods}


def _prompts_with_marker(prompts_dir: Path, tag: str, count: int, marked: int, marker: str):
    """`count` requests, the `marked`-th one carrying the stand-in's per-prompt fault marker."""
    import yaml

    from rp_pipeline.video_requests.model import VideoRequest

    write_prompts(prompts_dir, tag, count)
    path = prompts_dir / f"{tag}.yaml"
    entries = yaml.safe_load(path.read_text())["requests"]
    entries[marked]["prompt"] += f" {marker}"
    path.write_text(yaml.safe_dump({"requests": entries}))
    return [VideoRequest.from_dict({**e, "workflow": "wan22_ti2v_5b"}).key for e in entries]


@pytest.mark.parametrize(
    ("marker", "reason"),
    [("[[fail]]", "failed in node"), ("[[hang]]", "did not finish within 6 s; interrupted")],
)
def test_one_bad_prompt_fails_only_its_partition(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    marker: str,
    reason: str,
) -> None:
    """One prompt of three fails (execution error) or hangs (interrupted at its deadline): the
    other two are materialized, the run fails naming that partition and why, no pod is left."""
    # Each case its own prompts: a video an earlier case left in R2 would be collected, not made.
    keys = _prompts_with_marker(prompts_dir, f"onebad-{marker.strip('[]')}", 3, 1, marker)
    register_requests(instance, resources)
    result = generate(instance, fleet_resources(resources, prompt_deadline_s=6.0), keys)
    assert not result.success
    found = latest_by_partition(instance)
    assert keys[0] in found and keys[2] in found and keys[1] not in found
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("terminate_pod")
    message = str(failure.event_specific_data.error)
    assert "1 of 3 video(s) failed" in message
    assert f"{keys[1]}: " in message and reason in message
    assert all(p["desired_status"] in GONE for p in pods_of_run(devstack.emulator, result.run_id))


def test_pod_limit_holds_for_simultaneous_runs(
    devstack: Devstack, pipeline_env: dict[str, str], prompts_dir: Path, tmp_path: Path
) -> None:
    """Three one-video runs started at once (three processes, one instance) with
    RP_MAX_PODS=1: never two live pods; every run succeeds in turn."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    keys = write_prompts(prompts_dir, "race", 3)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RP_MAX_PODS": "1"}
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        register_requests(instance, resources_for("devstack"))
    before = {p["id"] for p in devstack.emulator.pods()}
    peak = {"live": 0}
    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            live = [
                p
                for p in devstack.emulator.pods()
                if p["id"] not in before and p["desired_status"] == "RUNNING"
            ]
            peak["live"] = max(peak["live"], len(live))
            time.sleep(0.05)

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    try:
        failed = run_batch_processes(keys, env, SLOW, tmp_path)
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert not failed, "\n".join(failed)
    assert peak["live"] == 1
    new = [p for p in devstack.emulator.pods() if p["id"] not in before]
    assert len(new) == 3 and all(p["desired_status"] in GONE for p in new)


def test_lease_is_written_renewed_and_removed(pipeline_env: dict[str, str]) -> None:
    r2 = r2_now()
    with LeaseKeeper(r2, "run-lease-test", lease_s=0.6) as leases:
        leases.hold("pod-lease-test")
        lease = read_lease(r2, "pod-lease-test")
        assert lease is not None
        first = lease.body
        assert first["pod_id"] == "pod-lease-test" and first["run_id"] == "run-lease-test"
        assert first["expires_at"] == pytest.approx(first["renewed_at"] + 0.6, abs=0.01)
        give_up = time.monotonic() + 10
        while (read_lease(r2, "pod-lease-test") or lease).body["renewed_at"] == first["renewed_at"]:
            assert time.monotonic() < give_up, "the lease was never renewed"
            time.sleep(0.05)
        leases.release("pod-lease-test")
    assert read_lease(r2, "pod-lease-test") is None


def test_reaper_fails_a_run_whose_lease_lapsed(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    """A run left STARTED by a killed process: its lease lapses, the reaper terminates the pod,
    marks the run failed and frees its pod slots. A run renewing its lease is spared."""
    from dagster import DagsterRunStatus
    from dagster._core.test_utils import create_run_for_test

    from rp_pipeline.defs.teardown.sensors import pod_reaper
    from rp_pipeline.fleet.leases import lease_body
    from rp_pipeline.fleet.slots import POD_POOL
    from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
    from tests.pipeline.helpers import tick

    client = RunPodClient(devstack.env["RUNPOD_API_KEY"], devstack.env["RUNPOD_API_BASE_URL"])
    spec = PodSpec(
        image="local/comfyui:test",
        gpu_types=["NVIDIA GeForce RTX 4090"],
        env={"ENABLE_R2_SYNC": "false"},
    )
    killed = create_run_for_test(
        instance, job_name="generate_videos", status=DagsterRunStatus.STARTED
    )
    alive = create_run_for_test(
        instance, job_name="generate_videos", status=DagsterRunStatus.STARTED
    )
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POD_POOL, 2)
    assert storage.claim_concurrency_slot(POD_POOL, killed.run_id, "pod-0").is_claimed
    r2 = r2_now()
    pods = {run.run_id: client.launch(spec, run.run_id) for run in (killed, alive)}
    try:
        now = time.time()
        # The killed run's last renewal granted nothing more (R2's clock judges the lapse).
        lapsed = lease_body(pods[killed.run_id].id, killed.run_id, 0, now=now - 400)
        fresh = lease_body(pods[alive.run_id].id, alive.run_id, 300, now=now)
        r2.put_bytes(lease_key(pods[killed.run_id].id, r2.prefix), lapsed, "application/json")
        r2.put_bytes(lease_key(pods[alive.run_id].id, r2.prefix), fresh, "application/json")
        result, _ = tick(pod_reaper, instance, resources)
        assert "reaped 1 pod(s)" in str(result.skip_message)
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert status[pods[killed.run_id].id] == "TERMINATED"
        assert status[pods[alive.run_id].id] == "RUNNING"
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(alive.run_id).status == DagsterRunStatus.STARTED
        assert storage.get_concurrency_info(POD_POOL).claimed_slots == []
    finally:
        for pod in pods.values():
            client.terminate(pod.id)


def test_hung_prompts_are_interrupted_at_their_deadline(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    """Every prompt hangs (the stand-in's pod-wide fault): each is interrupted at its deadline,
    the pod moves on to the next, and the run names both partitions."""
    keys = write_prompts(prompts_dir, "hangs", 2)
    register_requests(instance, resources)
    hanging = with_settings(
        resources, extra_pod_env={"COMFY_STANDIN_FAULT": "hang"}, prompt_deadline_s=3.0
    )
    result = generate(instance, hanging, keys)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("terminate_pod")
    message = str(failure.event_specific_data.error)
    assert "2 of 2 video(s) failed" in message
    assert all(f"{key}: did not finish within 3 s; interrupted" in message for key in keys)
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["desired_status"] in GONE


def test_terminate_refused_is_reported_unconfirmed_and_videos_still_count(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    """RunPod answers 5xx to every terminate: the video is materialized anyway, terminate is
    retried for a bounded time, and the run says the pod's termination is unconfirmed."""
    [key] = write_prompts(prompts_dir, "noterm", 1)
    register_requests(instance, resources)
    devstack.emulator.fail_next(25, "5xx", operation="terminate_pod")
    try:
        result = generate(instance, with_settings(resources, terminate_confirm_s=2.0), [key])
        assert key in latest_by_partition(instance)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key.endswith("terminate_pod")
        assert "not confirmed" in str(failure.event_specific_data.error)
        settled = settled_by_partition(instance)[key]
        assert settled["terminate_confirmed"] is False
        # Our billed time runs to the first terminate call; the pod really ran on through at
        # least one full confirm window of retries (the emulator still bills it).
        [pod] = pods_of_run(devstack.emulator, result.run_id)
        assert pod["desired_status"] == "RUNNING"
        assert pod["seconds"] - settled["pod_billed_s"] >= 2.0
    finally:
        devstack.emulator.reset()  # clears the remaining faults and ends the refused pod


def test_r2_outage_is_ridden_out_and_the_pod_kept_until_its_videos_are_in(
    devstack: Devstack,
    instance: DagsterInstance,
    pipeline_env: dict[str, str],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """R2 refuses connections for a while mid-batch (for the pods' agents and for Dagster): every
    video still materializes, and the pod is terminated only after the outage, once its last
    video is in R2."""
    from urllib.parse import urlparse

    from tests.agent.test_retry import FlakyProxy

    proxy = FlakyProxy(urlparse(pipeline_env["R2_ENDPOINT"]).port or 80)
    monkeypatch.setenv("R2_ENDPOINT", f"http://127.0.0.1:{proxy.port}")
    try:
        resources = resources_for("devstack")
        keys = write_prompts(prompts_dir, "r2down", 3)
        register_requests(instance, resources)
        restored: list[float] = []

        def outage() -> None:
            give_up = time.monotonic() + 120
            while time.monotonic() < give_up:
                if instance.fetch_materializations(AssetKey("generated_video"), limit=1).records:
                    proxy.down()
                    time.sleep(6.0)
                    restored.append(time.time())
                    proxy.up.set()
                    return
                time.sleep(0.05)

        cut = threading.Thread(target=outage, daemon=True)
        cut.start()
        result = generate(instance, fleet_resources(resources), keys)
        cut.join(timeout=10)
    finally:
        proxy.up.set()
        proxy.close()
    assert restored, "the outage never started"
    assert result.success
    assert set(latest_by_partition(instance)) >= set(keys)
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["desired_status"] in GONE
    assert pod["terminated_at"] > restored[0], "the pod was terminated during the outage"
    assert "R2 error" in "\n".join(run_messages(instance, result.run_id)), "no retry was needed"
