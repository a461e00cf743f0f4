"""The reaper judges leases on one clock, R2's: a daemon (or a run) whose wall clock is 10 min
off neither ends a healthy pod nor spares a dead run's pod. Real devstack pods and R2; the
skewed clocks are injected where the sensor and the lease writer take `now`."""

from __future__ import annotations

import time
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from rp_agent.keys import lease_key
from rp_devstack.stack import Devstack
from rp_pipeline.defs.teardown import sensors
from rp_pipeline.defs.teardown.sensors import pod_reaper
from rp_pipeline.fleet.leases import PodNeeds, encode, idle_lease, lease_body
from rp_pipeline.fleet.slots import POD_POOL
from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
from tests.pipeline.helpers import r2_now, tick

SPEC = PodSpec(
    image="local/comfyui:test",
    gpu_types=["NVIDIA GeForce RTX 4090"],
    env={"ENABLE_R2_SYNC": "false"},
)


def wait_past_r2_seconds(seconds: float) -> None:
    """R2's Date and Last-Modified are whole seconds: an object is seen `seconds` old once
    `seconds` + 2 s have passed (the reader takes one second off, never ageing it early)."""
    time.sleep(seconds + 2.1)


@pytest.mark.parametrize("skew_s", [600.0, -600.0], ids=["clocks-ahead", "clocks-behind"])
def test_a_skewed_daemon_and_run_neither_end_a_healthy_pod_nor_spare_a_dead_one(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    skew_s: float,
) -> None:
    # The daemon's clock is off one way, the runs' the other: on wall clocks alone every lease
    # would look 20 min lapsed (or 20 min from lapsing).
    monkeypatch.setattr(sensors, "wall_clock", lambda: time.time() + skew_s)
    run_now = time.time() - skew_s
    client = RunPodClient(devstack.env["RUNPOD_API_KEY"], devstack.env["RUNPOD_API_BASE_URL"])
    healthy, dead = (
        create_run_for_test(instance, job_name="generate_videos", status=DagsterRunStatus.STARTED)
        for _ in range(2)
    )
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POD_POOL, 4)
    assert storage.claim_concurrency_slot(POD_POOL, dead.run_id, "pod-0").is_claimed
    r2 = r2_now()
    pods = {
        "healthy": client.launch(SPEC, healthy.run_id),
        "dead": client.launch(SPEC, dead.run_id),
        "warm": client.launch(SPEC, healthy.run_id),
        "cold": client.launch(SPEC, healthy.run_id),
    }
    needs = PodNeeds(SPEC.image, SPEC.gpu_types[0], None)
    bodies = {
        "healthy": lease_body(pods["healthy"].id, healthy.run_id, 300, now=run_now),
        # The dead run's last renewal granted 1 s; nobody renews it again.
        "dead": lease_body(pods["dead"].id, dead.run_id, 1, now=run_now),
        "warm": encode(idle_lease(pods["warm"].id, healthy.run_id, needs, 300, run_now)),
        "cold": encode(idle_lease(pods["cold"].id, healthy.run_id, needs, 1, run_now)),
    }
    try:
        for name, body in bodies.items():
            r2.put_bytes(lease_key(pods[name].id, r2.prefix), body, "application/json")
        wait_past_r2_seconds(1.0)
        result, _ = tick(pod_reaper, instance, resources)
        message = str(result.skip_message)
        assert "reaped 2 pod(s)" in message, message
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert {name: status[pod.id] for name, pod in pods.items()} == {
            "healthy": "RUNNING",
            "dead": "TERMINATED",
            "warm": "RUNNING",
            "cold": "TERMINATED",
        }
        # The warm pod's idle time left is R2's, not the skewed clocks' difference.
        assert f"{pods['warm'].id} (ends in 29" in message, message
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert instance.get_run_by_id(healthy.run_id).status == DagsterRunStatus.STARTED
        assert dead.run_id not in {
            s.run_id for s in storage.get_concurrency_info(POD_POOL).claimed_slots
        }
    finally:
        for pod in pods.values():
            client.terminate(pod.id)
