"""Paying less per video: warm pods adopted by the next run (or ending themselves), spot pods
whose prompts resume elsewhere when RunPod takes them back, and a budget that holds. Real
devstack pods (emulator + rp-agent), real Dagster runs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterInstance

from rp_agent.keys import lease_key
from rp_devstack.runpod_emulator import EmulatorAdmin
from rp_devstack.stack import Devstack
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.runpod.resource import RunPodClient
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    r2_now,
    register_requests,
    run_messages,
    settled_by_partition,
    with_settings,
    write_prompts,
)

# A short lease poll on the pod, so an idle pod's watcher notices its end quickly.
FAST = {"COMFY_STANDIN_STEP_SECONDS": "0.02", "RP_POD_LEASE_POLL_S": "0.5"}
SLOW = {"COMFY_STANDIN_STEP_SECONDS": "0.1", "RP_POD_LEASE_POLL_S": "0.5"}


def fleet(resources: dict[str, Any], env: dict[str, str], **changes: Any) -> dict[str, Any]:
    return with_settings(resources, extra_pod_env=dict(env), **changes)


def pod_status(devstack: Devstack, pod_id: str) -> str:
    return str(next(p for p in devstack.emulator.pods() if p["id"] == pod_id)["desired_status"])


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    give_up = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def failure_message(result: Any) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.error)


def test_next_run_adopts_the_idle_pod(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = write_prompts(prompts_dir, "warm", 2)
    register_requests(instance, resources)
    monkeypatch.setenv("RP_POD_IDLE_S", "120")
    first = generate(instance, fleet(resources, FAST, max_live_pods=1), keys[:1])
    assert first.success
    [pod] = pods_of_run(devstack.emulator, first.run_id)
    assert pod["desired_status"] == "RUNNING", "the pod waits, idle, for the next run"
    r2 = r2_now()
    assert b'"idle"' in r2.get_bytes(lease_key(pod["id"], r2.prefix))
    assert settled_by_partition(instance)[keys[0]]["pod_kept_warm"] is True

    # The second run keeps nothing warm: it adopts the pod, then terminates it. Its caps hold
    # the warm pod but not a new one: the $/h cap is that pod's price (the idle pod already
    # bills it), and the run's budget covers one video but not an hour-long boot.
    monkeypatch.setenv("RP_POD_IDLE_S", "0")
    monkeypatch.setenv("RP_EXPECTED_BOOT_S", "3600")
    monkeypatch.setenv("RP_EXPECTED_VIDEO_S", "60")
    price = float(pod["cost_per_hr"])
    monkeypatch.setenv("RP_MAX_RUN_COST_USD", f"{price * 600 / 3600:.6f}")
    created = len(devstack.emulator.pods())
    tight = fleet(resources, FAST, max_live_pods=1, max_total_cost_per_hr=price)
    second = generate(instance, tight, keys[1:])
    assert second.success, failure_message(second)
    assert len(devstack.emulator.pods()) == created, "no new pod was created"
    found = latest_by_partition(instance)
    assert found[keys[1]]["pod_id"] == pod["id"]
    settled = settled_by_partition(instance)[keys[1]]
    assert settled["pod_idle_s"] > 0 and settled["pod_idle_cost_usd"] > 0
    assert settled["pod_busy_s"] + settled["pod_idle_s"] == pytest.approx(
        settled["pod_billed_s"], abs=0.01
    )
    # The video's own share does not hide the idle time it took over.
    assert settled["cost_usd"] == pytest.approx(settled["pod_busy_cost_usd"], abs=1e-6)
    assert "adopted warm pod" in "\n".join(run_messages(instance, second.run_id))
    assert pod_status(devstack, pod["id"]) == "TERMINATED"


def test_idle_pod_nobody_adopts_ends_itself(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = write_prompts(prompts_dir, "lonely", 1)
    register_requests(instance, resources)
    monkeypatch.setenv("RP_POD_IDLE_S", "15")  # the shortest idle time allowed
    result = generate(instance, fleet(resources, FAST, max_live_pods=1), keys)
    assert result.success
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    # Idle time + one watcher poll, with room for a loaded machine (not a speed assertion).
    wait_for(lambda: pod_status(devstack, pod["id"]) == "TERMINATED", 60, "the idle pod's end")


def test_preempted_pod_prompts_finish_elsewhere_once(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RUNPOD_API", "graphql")
    monkeypatch.setenv("RP_POD_MARKET", "interruptible")
    keys = write_prompts(prompts_dir, "spot", 6)
    register_requests(instance, resources)
    admin = EmulatorAdmin(devstack.emulator.base_url)
    before = {p["id"] for p in devstack.emulator.pods()}
    r2 = r2_now()

    def videos_in_r2() -> set[str]:
        return {k for page in r2.iter_keys(r2.prefix) for k in page.keys if k.endswith(".mp4")}

    videos_before = videos_in_r2()
    taken: list[str] = []

    def preempt_first_busy_pod() -> None:
        def busy() -> list[dict[str, Any]]:
            return [
                p
                for p in devstack.emulator.pods()
                if p["id"] not in before and p["desired_status"] == "RUNNING"
            ]

        try:  # once a first video is in R2, both pods hold prompts
            wait_for(lambda: len(busy()) >= 2 and videos_in_r2() - videos_before, 90, "a video")
        except AssertionError:
            return
        taken.append(busy()[0]["id"])
        admin.preempt_pod(taken[0])
        taken_at.append(time.time())

    taken_at: list[float] = []
    thread = threading.Thread(target=preempt_first_busy_pod)
    thread.start()
    # Neither the status poll nor ComfyUI's unreachable grace comes within 10 minutes: only
    # reading RunPod's status as ComfyUI stops answering can notice the preemption in time.
    patient = {
        **fleet(resources, SLOW, max_live_pods=2, pod_status_poll_s=600.0),
        "comfyui": ComfyUIResource(poll_interval_s=0.5, unreachable_grace_s=600.0),
    }
    result = generate(instance, patient, keys)
    thread.join()
    assert result.success, failure_message(result)
    assert taken, "no pod was preempted"
    noticed = min(
        e.timestamp
        for e in instance.all_logs(result.run_id)
        if taken[0] in (e.user_message or "") and "go back to the queue" in e.user_message
    )
    assert noticed - taken_at[0] < 60, "the preemption was noticed only after a poll or grace"
    found = latest_by_partition(instance)
    moved = [k for k in keys if found[k].get("preempted")]
    assert moved and all(found[k]["preempted_pod_id"] == taken[0] for k in moved)
    # Every partition materialized once and rendered once (one object each in R2).
    runs = [
        r.partition_key
        for r in instance.fetch_materializations(AssetKey("generated_video"), limit=1000).records
        if r.run_id == result.run_id
    ]
    assert sorted(runs) == sorted(keys)
    objects = videos_in_r2()
    for key in keys:
        stem = f"{key}-{result.run_id[:8]}_"
        assert sum(stem in obj for obj in objects) == 1, key


def test_budget_reached_mid_run_fails_the_queue(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The estimate (0.2 s a video, 1 s of boot) is far below what videos take here (~4 s), so
    the cap holds the batch before launch and is reached once the first videos have run. The
    margins are wide: the pod may boot in anything up to ~15 s, and 8 videos never fit."""
    keys = write_prompts(prompts_dir, "budget", 8)
    register_requests(instance, resources)
    client = RunPodClient(os.environ["RUNPOD_API_KEY"], os.environ["RUNPOD_API_BASE_URL"])
    catalog = {g.id: g for g in client.gpu_types()}
    runpod = resources["runpod"]
    # The cheapest type the run may get: the cap holds whichever GPU the pod lands on.
    price = min(catalog[g].price_for(runpod.cloud_type) for g in runpod.gpu_types if g in catalog)
    monkeypatch.setenv("RP_EXPECTED_VIDEO_S", "0.2")
    monkeypatch.setenv("RP_EXPECTED_BOOT_S", "1")
    # 20 s of pod time: the boot and the first videos fit, 8 videos of ~4 s (32 s) do not.
    monkeypatch.setenv("RP_MAX_RUN_COST_USD", f"{price * 20.0 / 3600:.8f}")
    slower = {**SLOW, "COMFY_STANDIN_STEP_SECONDS": "0.2"}
    result = generate(instance, fleet(resources, slower, max_live_pods=1), keys)
    assert not result.success
    pods = pods_of_run(devstack.emulator, result.run_id)
    assert len(pods) == 1, "no pod is launched once the budget is reached"
    message = failure_message(result)
    found = latest_by_partition(instance)
    failed = [k for k in keys if k not in found]
    assert failed and len(failed) < len(keys)
    assert all(f"{k}: budget reached" in message for k in failed), message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RP_POD_IDLE_S": "-5"}, "RP_POD_IDLE_S must be 0 (terminate at once) or at least 15"),
        ({"RP_POD_IDLE_S": "soon"}, "RP_POD_IDLE_S must be 0 (terminate at once) or at least"),
        ({"RP_POD_IDLE_S": "5"}, "a shorter idle time only bills: no run could adopt the pod"),
        ({"RP_SPOT_BID_MAX": "cheap"}, "RP_SPOT_BID_MAX must be a price"),
        ({"RP_MAX_RUN_COST_USD": "0.001"}, "is below one video's estimate"),
    ],
)
def test_bad_money_settings_refused_before_any_pod(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    keys = write_prompts(prompts_dir, "badmoney", 1)
    register_requests(instance, resources)
    result = generate(instance, fleet(resources, FAST), keys)
    assert not result.success
    message = failure_message(result)
    assert expected in message and "no pod was launched" in message
    assert pods_of_run(devstack.emulator, result.run_id) == []
