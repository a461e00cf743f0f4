"""Pods die with their run: on cancellation (SIGTERM to the run process), and via the reaper
for pods whose run is over or unknown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from rp_devstack.stack import Devstack
from rp_pipeline.definitions import resources_for
from rp_pipeline.defs.teardown.sensors import pod_reaper
from rp_pipeline.integrations.runpod.resource import RunPodClient
from tests.pipeline.helpers import pods_of_run, register_requests, tick, write_prompts

REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _harvest_started(instance: DagsterInstance) -> str | None:
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            step = event.step_key if event else None
            if step and step.endswith("harvest_outputs") and event.event_type_value == "STEP_START":
                return run.run_id
    return None


@pytest.mark.slow
def test_cancelled_run_terminates_its_pod(
    devstack: Devstack, pipeline_env: dict[str, str], prompts_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    [key] = write_prompts(prompts_dir, "cancel", 1)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            register_requests(instance, resources_for("devstack"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.pipeline.run_batch_process", key,
                 json.dumps({"COMFY_STANDIN_FAULT": "hang"})],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                run_id = _wait_for(lambda: _harvest_started(instance), 120, "harvest_outputs")
                # Let the op get past Dagster's step preamble into its wait on ComfyUI (an
                # interrupt before that is the failure/cancel sensors' and the reaper's case).
                time.sleep(2.0)
                [pod] = pods_of_run(devstack.emulator, run_id)
                assert pod["desired_status"] == "RUNNING"
                proc.send_signal(signal.SIGTERM)  # what the run launcher does on cancel
                proc.wait(timeout=90)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            [pod] = pods_of_run(devstack.emulator, run_id)
            assert pod["desired_status"] == "TERMINATED"
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status in {
                DagsterRunStatus.CANCELED, DagsterRunStatus.FAILURE
            }  # fmt: skip
    finally:
        os.environ.pop("DAGSTER_HOME", None)


def test_reaper_terminates_orphans_and_spares_live_runs(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = RunPodClient(devstack.env["RUNPOD_API_KEY"], devstack.env["RUNPOD_API_BASE_URL"])
    from rp_pipeline.integrations.runpod.resource import PodSpec

    spec = PodSpec(
        image="local/comfyui:test",
        gpu_types=["NVIDIA GeForce RTX 4090"],
        env={"ENABLE_R2_SYNC": "false"},
    )
    # A run that finished (its pod leaked), a run that does not exist, and a live run.
    done_run = create_run_for_test(
        instance, job_name="generate_videos", status=DagsterRunStatus.SUCCESS
    )
    live_run = create_run_for_test(
        instance, job_name="generate_videos", status=DagsterRunStatus.STARTED
    )
    orphan_done = client.launch(spec, done_run.run_id)
    orphan_unknown = client.launch(spec, "00000000-dead-beef-0000-000000000000")
    alive = client.launch(spec, live_run.run_id)
    try:
        result, cursor = tick(pod_reaper, instance, resources)
        assert "reaped 2 pod(s)" in str(result.skip_message)
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert status[orphan_done.id] == "TERMINATED"
        assert status[orphan_unknown.id] == "TERMINATED"
        assert status[alive.id] != "TERMINATED"
        # The live run's pod goes too once it outlives the maximum lifetime.
        # RP_POD_MAX_LIFETIME_S reaches the sensor through the settings resource.
        monkeypatch.setenv("RP_POD_MAX_LIFETIME_S", "0.5")
        from rp_pipeline.definitions import resources_for

        time.sleep(1.0)
        result, _ = tick(pod_reaper, instance, resources_for("devstack"), cursor)
        assert "reaped 1 pod(s)" in str(result.skip_message)
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert status[alive.id] == "TERMINATED"
    finally:
        for pod in (orphan_done, orphan_unknown, alive):
            client.terminate(pod.id)


def test_run_failure_sensor_terminates_the_failed_runs_pods(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    """The net under the op's own guard: a run that died without terminating (e.g. SIGKILL)."""
    from dagster import DagsterEventType, build_run_status_sensor_context, materialize

    from rp_pipeline.defs.requests.assets import video_requests
    from rp_pipeline.defs.teardown.sensors import terminate_pods_of_failed_run
    from rp_pipeline.defs.videos.assets import generated_video
    from rp_pipeline.integrations.runpod.resource import PodSpec

    instance.add_dynamic_partitions("video_requests", ["no-such-request"])
    failed = materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=instance,
        resources=resources,
        partition_key="no-such-request",
        raise_on_error=False,
    )
    assert not failed.success
    record = instance.get_records_for_run(
        failed.run_id, of_type=DagsterEventType.RUN_FAILURE
    ).records[0]
    client = RunPodClient(devstack.env["RUNPOD_API_KEY"], devstack.env["RUNPOD_API_BASE_URL"])
    leaked = client.launch(
        PodSpec(
            image="local/comfyui:test",
            gpu_types=["NVIDIA GeForce RTX 4090"],
            env={"ENABLE_R2_SYNC": "false"},
        ),
        failed.run_id,
    )
    try:
        context = build_run_status_sensor_context(
            sensor_name="terminate_pods_of_failed_run",
            dagster_event=record.event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=instance.get_run_by_id(failed.run_id),
            resources=resources,
        ).for_run_failure()
        terminate_pods_of_failed_run(context)
        [pod] = pods_of_run(devstack.emulator, failed.run_id)
        assert pod["desired_status"] == "TERMINATED"
    finally:
        client.terminate(leaked.id)
