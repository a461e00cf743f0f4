"""The client is the one layer that sends a RunPod call again: with every create answered 5xx, one
pod slot sends at most the client's `create_attempts` creates (counted by the emulator) and the
user reads one line; a create whose answer was lost is adopted, never made twice; reads ride out
an outage for the client's read patience; the pod sweep leans on those reads."""

from __future__ import annotations

import time
import uuid

import pytest
from runpod_helpers import GPU_4090, spec

from rp_agent.r2 import R2Settings
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.fleet.launcher import Launcher
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.sweep import sweep_run_pods
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import (
    PodLaunchError,
    RunPodClient,
    RunPodResource,
)

RUN_ID = "feedc0de-retry-layer"
FAULTS = 100  # more 5xx than any layer could use up


def creates_received(emulator: RunPodEmulator) -> int:
    """Creates the emulator answered with an injected 5xx: the faults used up (either API)."""
    left = 0
    while emulator.take_fault("create_pod") is not None:
        left += 1
    return FAULTS - left


def one_line_without_retry_advice(message: str) -> bool:
    return "\n" not in message and "retry" not in message.lower()


def launcher(emulator: RunPodEmulator, r2_settings: R2Settings, **runpod: object) -> Launcher:
    r2 = R2Resource(
        endpoint=r2_settings.endpoint,
        bucket=r2_settings.bucket,
        access_key_id=r2_settings.access_key_id,
        secret_access_key=r2_settings.secret_access_key,
    )
    resource = RunPodResource(
        api_key=emulator.api_key,
        api_base_url=emulator.base_url,
        api="rest",
        image="local/comfyui:test",
        gpu_types=[GPU_4090],
        **runpod,  # type: ignore[arg-type]
    )
    return Launcher(
        runpod=resource,
        settings=GenerationSettings(),
        run_id=RUN_ID,
        leases=LeaseKeeper(r2, RUN_ID, 300.0),
        base_env={},
        batch_size=1,
    )


def test_every_create_5xx_sends_the_configured_attempts_once(
    runpod_emulator: RunPodEmulator, api: str
) -> None:
    client = RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        retry_backoff_s=0.01,
        create_attempts=3,
        api=api,
    )
    runpod_emulator.fail_next(FAULTS, "5xx", operation="create_pod")
    with pytest.raises(PodLaunchError) as info:
        client.launch(spec(), RUN_ID)
    assert creates_received(runpod_emulator) == 3
    message = str(info.value)
    assert one_line_without_retry_advice(message), message
    assert "3 attempt(s); no pod by that name exists" in message
    assert runpod_emulator.pods() == []


def test_one_pod_slot_sends_at_most_the_clients_attempts(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings
) -> None:
    """Through the Launcher, as the launch op calls it: no second layer adds creates, and the
    exception text (what the op's Failure quotes) is the client's one line."""
    slot = launcher(runpod_emulator, r2_settings, create_attempts=2)
    runpod_emulator.fail_next(FAULTS, "5xx", operation="create_pod")
    with pytest.raises(PodLaunchError) as info:
        slot.launch("pod-0")
    assert runpod_emulator.request_counts()["POST /v2/pods"] == 2
    assert creates_received(runpod_emulator) == 2
    message = str(info.value)
    assert one_line_without_retry_advice(message), message
    assert message.startswith(f"RunPod did not create pod dagster-{RUN_ID[:8]}-x1-pod-0-")
    assert runpod_emulator.pods() == []


def test_lost_create_then_pod_list_outage_adopts_the_pod(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings
) -> None:
    """The create goes through but its answer is lost, then the pod list answers 5xx for 2 s:
    the client looks the pod up by name until the list answers and adopts it; one create."""
    slot = launcher(runpod_emulator, r2_settings)
    runpod_emulator.fail_next(1, "lose", operation="create_pod")
    runpod_emulator.fail_next(1000, "5xx", operation="list_pods", seconds=2.0)
    pod = slot.launch("pod-0")
    assert runpod_emulator.request_counts()["POST /v2/pods"] == 1
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.pod_id]
    slot.leases.release(pod.pod_id)
    runpod_emulator.terminate_pod(pod.pod_id)


def test_lost_create_with_the_pod_list_down_is_one_line(runpod_emulator, api) -> None:
    """When the pod list stays down past the read patience, nobody can tell whether the lost
    create made a pod: the launch stops (no blind second create) and says so in one line."""
    client = RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        retry_backoff_s=0.05,
        read_patience_s=0.5,
        api=api,
    )
    runpod_emulator.fail_next(1, "lose", operation="create_pod")
    runpod_emulator.fail_next(1000, "5xx", operation="list_pods", seconds=5.0)
    with pytest.raises(PodLaunchError, match="cannot tell whether pod dagster-feedc0de-") as info:
        client.launch(spec(), RUN_ID)
    assert one_line_without_retry_advice(str(info.value)), str(info.value)
    (made,) = runpod_emulator.pods()  # the lost create's pod, for the run's sweep to end
    runpod_emulator.terminate_pod(made["id"])


def test_sweep_rides_out_a_pod_list_outage(runpod_emulator: RunPodEmulator, api: str) -> None:
    client = RunPodClient(
        runpod_emulator.api_key, runpod_emulator.base_url, retry_backoff_s=0.05, api=api
    )
    run_id = f"sweep{uuid.uuid4().hex}"
    kept = client.launch(spec(name="kept"), run_id)
    stray = client.launch(spec(name="stray"), run_id)
    runpod_emulator.fail_next(1000, "5xx", operation="list_pods", seconds=1.0)
    started = time.monotonic()
    assert sweep_run_pods(client, run_id, keep=[kept.id], confirm_s=10) == [stray.id]
    assert time.monotonic() - started >= 0.9  # it did wait for the list to answer
    assert client.get(stray.id) is None and client.get(kept.id) is not None
    client.terminate(kept.id)
