"""The unmodified `runpod` SDK against the emulator, through RUNPOD_API_BASE_URL."""

from __future__ import annotations

import time

import pytest
import requests
import runpod
from runpod import error as runpod_error
from runpod_helpers import GPU_4090, GPU_L40S

from rp_devstack.runpod_emulator import CAPACITY_MESSAGE, RunPodEmulator
from rp_devstack.stack import NETWORK_VOLUME_ID
from rp_pipeline.integrations.runpod.token import new_pod_token

TOKEN = new_pod_token()


@pytest.fixture
def sdk(runpod_emulator: RunPodEmulator, monkeypatch: pytest.MonkeyPatch) -> RunPodEmulator:
    # The SDK reads RUNPOD_API_BASE_URL on every call and the key from the module global.
    monkeypatch.setenv("RUNPOD_API_BASE_URL", runpod_emulator.base_url)
    monkeypatch.setattr(runpod, "api_key", runpod_emulator.api_key)
    return runpod_emulator


def test_sdk_pod_lifecycle(sdk: RunPodEmulator) -> None:
    sdk.set_boot_delay(1.5)
    created = runpod.create_pod(
        "sdk-pod",
        "local/comfyui:test",
        GPU_L40S,
        ports="8188/http,22/tcp",
        network_volume_id=NETWORK_VOLUME_ID,
        env={"ENABLE_R2_SYNC": "false", "RP_POD_TOKEN": TOKEN},
    )
    pod_id = created["id"]
    assert created["imageName"] == "local/comfyui:test"

    booting = runpod.get_pod(pod_id)
    assert booting["desiredStatus"] == "RUNNING"
    assert booting["runtime"] is None  # RUNNING is not ready
    assert booting["costPerHr"] == 0.99
    assert booting["machine"]["gpuDisplayName"] == "L40S"
    assert "ENABLE_R2_SYNC=false" in booting["env"]

    deadline = time.monotonic() + 60
    while (pod := runpod.get_pod(pod_id))["runtime"] is None:
        assert time.monotonic() < deadline, "runtime never appeared"
        time.sleep(0.2)
    (mapping,) = pod["runtime"]["ports"]
    assert mapping["privatePort"] == 8188 and mapping["isIpPublic"] is True
    url = f"http://{mapping['ip']}:{mapping['publicPort']}/system_stats"
    stats = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert stats.status_code == 200
    assert requests.get(url, timeout=5).status_code == 401  # the pod's proxy wants its token

    assert [p["id"] for p in runpod.get_pods()] == [pod_id]
    assert runpod.stop_pod(pod_id)["desiredStatus"] == "EXITED"
    assert runpod.resume_pod(pod_id, 1)["desiredStatus"] == "RUNNING"
    runpod.terminate_pod(pod_id)
    assert runpod.get_pod(pod_id) is None
    assert runpod.get_pods() == []
    (billed,) = sdk.billing()["pods"]
    assert billed["desired_status"] == "TERMINATED" and billed["cost"] > 0


def test_sdk_gpu_queries(sdk: RunPodEmulator) -> None:
    ids = {g["id"] for g in runpod.get_gpus()}
    assert {GPU_4090, GPU_L40S, "NVIDIA H100 80GB HBM3"} <= ids
    l40s = runpod.get_gpu(GPU_L40S)
    assert l40s["securePrice"] == 0.99 and l40s["lowestPrice"]["uninterruptablePrice"] > 0
    with pytest.raises(ValueError, match="No GPU found"):
        runpod.get_gpu("NVIDIA GeForce RTX 9999")
    with pytest.raises(ValueError):
        runpod.create_pod("x", "img", "NVIDIA GeForce RTX 9999")
    assert sdk.pods() == []


def test_sdk_errors_bad_key_and_capacity(sdk: RunPodEmulator, monkeypatch) -> None:
    sdk.set_stock(GPU_4090, 0)
    with pytest.raises(runpod_error.QueryError, match="no longer any instances available") as info:
        runpod.create_pod("x", "img", GPU_4090)
    assert str(info.value) == CAPACITY_MESSAGE

    monkeypatch.setattr(runpod, "api_key", "not-the-key")
    with pytest.raises(runpod_error.AuthenticationError):
        runpod.get_pods()


def test_sdk_template(sdk: RunPodEmulator) -> None:
    saved = runpod.create_template("wan22", "local/comfyui:test", ports="8188/http", env={"A": "1"})
    assert saved["name"] == "wan22" and saved["env"] == [{"key": "A", "value": "1"}]
    with pytest.raises(runpod_error.QueryError, match="unique"):
        runpod.create_template("wan22", "other")
