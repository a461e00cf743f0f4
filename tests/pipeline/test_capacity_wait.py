"""Waiting for GPU stock (RP_CAPACITY_WAIT_S) on the devstack: every allowed type out of stock
for a while, real runs, the emulator's stock schedule."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._utils.interrupts import raise_interrupts_as

from rp_devstack.stack import Devstack
from rp_pipeline.fleet.capacity import wait_for_capacity
from rp_pipeline.integrations.replace import replace_fields
from rp_pipeline.integrations.runpod.client import PodSpec, RunPodClient
from tests.pipeline.helpers import (
    generate,
    pods_of_run,
    register_requests,
    run_messages,
    write_prompts,
)

ALLOWED = ["NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000"]


@pytest.fixture
def emulator(devstack: Devstack) -> Any:
    yield devstack.emulator
    devstack.emulator.reset()  # stock back to normal for the next test


def out_of_stock(emulator: Any, seconds: float) -> None:
    for gpu in ALLOWED:
        emulator.set_stock(gpu, 0, seconds=seconds)


def allowed(resources: dict[str, Any]) -> dict[str, Any]:
    return {**resources, "runpod": replace_fields(resources["runpod"], gpu_types=ALLOWED)}


def failure_line(result: Any) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.error.message).strip()


def run_after_outage(
    emulator: Any,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    outage_s: float,
    wait_s: float,
) -> Any:
    # A tag of its own: the devstack's R2 is shared, and a video already there is not remade.
    keys = write_prompts(prompts_dir, f"stock-{outage_s:g}-{wait_s:g}", 1)
    register_requests(instance, resources)
    monkeypatch.setenv("RP_CAPACITY_WAIT_S", str(wait_s))
    out_of_stock(emulator, outage_s)
    return generate(instance, allowed(resources), keys)


def assert_waited_then_ran(instance: DagsterInstance, result: Any, outage_s: float) -> None:
    assert result.success
    messages = run_messages(instance, result.run_id)
    [waiting] = [m for m in messages if m.startswith("no allowed GPU type in stock")]
    assert "RP_CAPACITY_WAIT_S" in waiting and ALLOWED[0] in waiting
    [back] = [m for m in messages if m.startswith("GPU stock is back after")]
    waited = float(back.split("after ")[1].split(" s")[0])
    assert outage_s - 2 <= waited <= outage_s + 16  # the backoff's last sleep is at most 15 s


def test_a_run_waits_for_stock_and_runs_once_it_is_back(
    emulator: Any,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_after_outage(emulator, instance, resources, prompts_dir, monkeypatch, 4.0, 15.0)
    assert_waited_then_ran(instance, result, 4.0)


@pytest.mark.slow
def test_out_of_stock_for_20_s_with_a_60_s_wait_succeeds(
    emulator: Any,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_after_outage(emulator, instance, resources, prompts_dir, monkeypatch, 20.0, 60.0)
    assert_waited_then_ran(instance, result, 20.0)


def test_a_short_wait_fails_in_one_line_without_a_pod(
    emulator: Any,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_after_outage(emulator, instance, resources, prompts_dir, monkeypatch, 60.0, 5.0)
    assert not result.success
    line = failure_line(result)
    assert "\n" not in line
    assert "no pod was launched: no allowed GPU type came into stock within 5 s" in line
    assert "(RP_CAPACITY_WAIT_S)" in line and "no stock" in line
    assert pods_of_run(emulator, result.run_id) == []


def test_a_cancel_ends_the_wait_at_once(emulator: Any) -> None:
    """Dagster cancels a run by signalling its process, and raises DagsterExecutionInterruptedError
    in the op; the wait must end then, not when RP_CAPACITY_WAIT_S runs out."""
    out_of_stock(emulator, 60.0)
    client = RunPodClient(emulator.api_key, emulator.base_url)
    pods_before = len(emulator.pods())
    said: list[str] = []
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    with raise_interrupts_as(DagsterExecutionInterruptedError):
        timer.start()
        with pytest.raises(DagsterExecutionInterruptedError):
            wait_for_capacity(client, PodSpec(image="img", gpu_types=ALLOWED), 60.0, said.append)
    timer.cancel()
    assert time.monotonic() - started < 3.0
    assert said and said[0].startswith("no allowed GPU type in stock")
    assert len(emulator.pods()) == pods_before
