"""`rp-launch` end to end as a subprocess against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from runpod_helpers import GPU_4090, GPU_A6000

from rp_devstack.ports import free_port
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_devstack.stack import NETWORK_VOLUME_ID

RP_LAUNCH = str(Path(sys.executable).with_name("rp-launch"))


def rp_launch(emulator: RunPodEmulator, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "RUNPOD_API_KEY": emulator.api_key,
        "RUNPOD_API_BASE_URL": emulator.base_url,
        "RUNPOD_NETWORK_VOLUME_ID": NETWORK_VOLUME_ID,
        **env,
    }
    return subprocess.run(
        [RP_LAUNCH, *args], env=environ, capture_output=True, text=True, timeout=120
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rp-launch: error: "), result.stderr
    assert text in lines[0]
    assert "Traceback" not in result.stderr


def test_launch_wait_list_terminate(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.set_stock(GPU_4090, 0)
    launched = rp_launch(
        runpod_emulator,
        "launch",
        "--gpu", GPU_4090,
        "--gpu", GPU_A6000,
        "--env", "WAN_720P=true",
        "--name", "cli test",
        "--wait",
        "--timeout", "60",
        "--json",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    out = json.loads(launched.stdout)
    pod_id = out["pod"]["id"]
    assert out["pod"]["gpu_type"] == "RTX A6000"
    assert out["pod"]["name"].startswith("dagster-cli") and "-cli-test-" in out["pod"]["name"]
    assert out["comfyui_url"].startswith("http://127.0.0.1:")
    (record,) = runpod_emulator.pods()
    assert record["env"]["WAN_720P"] == "true" and record["datacenter"] == "EU-RO-1"

    listed = rp_launch(runpod_emulator, "list", "--json")
    assert [p["id"] for p in json.loads(listed.stdout)] == [pod_id]

    waited = rp_launch(runpod_emulator, "wait", pod_id)
    assert waited.returncode == 0 and waited.stdout.startswith("ready: ComfyUI at http://")

    for _ in range(2):  # idempotent
        gone = rp_launch(runpod_emulator, "--json", "terminate", pod_id)
        assert gone.returncode == 0 and json.loads(gone.stdout)["terminated"] is True
    assert runpod_emulator.pods()[0]["desired_status"] == "TERMINATED"


def test_gpus_lists_prices(runpod_emulator: RunPodEmulator) -> None:
    result = rp_launch(runpod_emulator, "gpus", "--json")
    prices = {g["id"]: g["secure_price"] for g in json.loads(result.stdout)}
    assert prices[GPU_4090] == 0.69 and prices["NVIDIA H100 80GB HBM3"] == 2.99


def test_failures_are_one_line_with_exit_codes(runpod_emulator: RunPodEmulator) -> None:
    bad_key = rp_launch(runpod_emulator, "list", RUNPOD_API_KEY="wrong-key-42")
    assert_one_line_failure(bad_key, 3, "RUNPOD_API_KEY")
    assert "wrong-key-42" not in bad_key.stderr

    unknown = rp_launch(runpod_emulator, "launch", "--gpu", "NVIDIA GeForce RTX 9999")
    assert_one_line_failure(unknown, 4, "unknown GPU type id(s): NVIDIA GeForce RTX 9999")

    runpod_emulator.set_stock(GPU_4090, 0)
    full = rp_launch(runpod_emulator, "--json", "launch", "--gpu", GPU_4090)
    assert_one_line_failure(full, 4, f"{GPU_4090}: no capacity")
    assert json.loads(full.stdout)["error"] == "NoCapacityError"

    offline = rp_launch(
        runpod_emulator, "list", RUNPOD_API_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )
    assert_one_line_failure(offline, 6, "network error")

    no_key = rp_launch(runpod_emulator, "gpus", RUNPOD_API_KEY="")
    assert_one_line_failure(no_key, 2, "RUNPOD_API_KEY is not set")
    assert runpod_emulator.pods() == []


@pytest.mark.slow
def test_wait_timeout_terminates_and_exits_5(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.set_boot_delay(600)
    result = rp_launch(runpod_emulator, "launch", "--wait", "--timeout", "1")
    assert_one_line_failure(result, 5, "not ready within 1 s")
    assert "it has been terminated" in result.stderr
    assert [p["desired_status"] for p in runpod_emulator.pods()] == ["TERMINATED"]
