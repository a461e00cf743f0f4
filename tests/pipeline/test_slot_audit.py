"""Pod slots cannot leak: a run that finds no free slot checks the slots against RunPod's live
pods and frees those no live pod backs (real Dagster instance, real emulator)."""

from __future__ import annotations

import time
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.fleet.slot_audit import free_slots_of_gone_pods
from rp_pipeline.fleet.slots import PodSlots
from rp_pipeline.integrations.runpod.client import PodSpec, RunPodClient


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str) -> None:
        self.lines.append(message)


def claim_with_audit(
    instance: DagsterInstance, run_id: str, client: RunPodClient, lease_s: float, log: Lines
) -> list[str]:
    slots = PodSlots(instance, run_id, 1)
    return slots.claim(
        1, 3.0, reconcile=lambda: free_slots_of_gone_pods(slots, instance, client, lease_s, log)
    )


def client_of(emulator: RunPodEmulator) -> RunPodClient:
    return RunPodClient(emulator.api_key, emulator.base_url, retry_backoff_s=0.05)


def test_a_slot_of_an_ended_run_whose_pod_is_gone_is_freed(
    instance: DagsterInstance, runpod_emulator: RunPodEmulator
) -> None:
    old = create_run_for_test(instance, status=DagsterRunStatus.FAILURE)
    assert PodSlots(instance, old.run_id, 1).claim(1, 0.0) == ["pod-0"]
    log = Lines()
    new = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    assert claim_with_audit(instance, new.run_id, client_of(runpod_emulator), 60.0, log) == [
        "pod-0"
    ]
    assert any(f"run {old.run_id[:8]}" in line and "no live pod" in line for line in log.lines)


def test_a_slot_whose_pod_is_live_is_kept(
    instance: DagsterInstance, runpod_emulator: RunPodEmulator
) -> None:
    client = client_of(runpod_emulator)
    old = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    assert PodSlots(instance, old.run_id, 1).claim(1, 0.0) == ["pod-0"]
    pod = client.launch(PodSpec(image="img", gpu_types=["NVIDIA GeForce RTX 4090"]), old.run_id)
    try:
        log = Lines()
        new = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        assert claim_with_audit(instance, new.run_id, client, 60.0, log) == []
        assert log.lines == []
    finally:
        client.terminate(pod.id)


def test_a_run_in_progress_with_no_pod_and_no_sign_of_life_is_failed_and_freed(
    instance: DagsterInstance, runpod_emulator: RunPodEmulator
) -> None:
    dead = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    instance.report_engine_event("last words", dead)
    assert PodSlots(instance, dead.run_id, 1).claim(1, 0.0) == ["pod-0"]
    time.sleep(0.5)
    log = Lines()
    new = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    claimed = claim_with_audit(instance, new.run_id, client_of(runpod_emulator), 0.1, log)
    assert claimed == ["pod-0"]
    run: Any = instance.get_run_by_id(dead.run_id)
    assert run.status == DagsterRunStatus.FAILURE
    assert any("marked failed" in line for line in log.lines)


def test_a_run_that_is_still_launching_keeps_its_slot(
    instance: DagsterInstance, runpod_emulator: RunPodEmulator
) -> None:
    launching = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    instance.report_engine_event("claiming a slot", launching)
    assert PodSlots(instance, launching.run_id, 1).claim(1, 0.0) == ["pod-0"]
    new = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    log = Lines()
    assert claim_with_audit(instance, new.run_id, client_of(runpod_emulator), 60.0, log) == []
    run: Any = instance.get_run_by_id(launching.run_id)
    assert run.status == DagsterRunStatus.STARTED


def test_with_one_slot_a_high_priority_run_queued_last_gets_the_next_pod(
    instance: DagsterInstance,
) -> None:
    """Runs waiting for a pod slot get it in priority order (their `dagster/priority` tag),
    then in arrival order: two low-priority runs queue first, a high-priority one after them."""
    import threading

    holder = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
    holding = PodSlots(instance, holder.run_id, 1)
    assert holding.claim(1, 0.0) == ["pod-0"]
    order: list[str] = []
    lock = threading.Lock()

    def wait_for_a_slot(name: str, priority: int) -> None:
        run = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        slots = PodSlots(instance, run.run_id, 1, priority)
        if slots.claim(1, 30.0):
            with lock:
                order.append(name)
            time.sleep(0.5)  # the pod's work
            slots.free("pod-0")

    waiters = []
    for name, priority in (("low-1", 0), ("low-2", 0), ("high", 10)):
        thread = threading.Thread(target=wait_for_a_slot, args=(name, priority))
        thread.start()
        waiters.append(thread)
        time.sleep(1.5)  # each is queued before the next arrives
    holding.free("pod-0")
    for thread in waiters:
        thread.join(timeout=60)
    assert order == ["high", "low-1", "low-2"]
