"""`rp-launch` end to end as a subprocess against the emulator."""

from __future__ import annotations

import json
import subprocess

import pytest
from runpod_helpers import GPU_4090, GPU_A6000

from rp_devstack.ports import free_port
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_devstack.stack import NETWORK_VOLUME_ID
from tests.rp_launch import one_line_error, only_base_url_and_key


def rp_launch(emulator: RunPodEmulator, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return only_base_url_and_key(
        emulator, *args, **{"RUNPOD_NETWORK_VOLUME_ID": NETWORK_VOLUME_ID, **env}
    )


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
    assert out["pod"]["gpu_type"] == GPU_A6000  # REST v2 names the GPU by its type id
    assert out["pod"]["datacenter"] == "EU-RO-1"
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


def test_gpus_lists_prices_and_stock(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.set_stock(GPU_A6000, 0)
    runpod_emulator.set_stock(GPU_4090, 1, datacenter="US-KS-2")
    result = rp_launch(runpod_emulator, "gpus", "--json")
    gpus = {g["id"]: g for g in json.loads(result.stdout)}
    assert gpus[GPU_4090]["secure_price"] == 0.69
    assert gpus["NVIDIA H100 80GB HBM3"]["secure_price"] == 2.99
    assert gpus[GPU_A6000]["availability"] == "NONE" and gpus[GPU_A6000]["datacenters"] == {}
    assert gpus[GPU_4090]["datacenters"] == {"EU-RO-1": "HIGH", "US-KS-2": "LOW"}
    table = rp_launch(runpod_emulator, "gpus").stdout.splitlines()
    (line_4090,) = [line for line in table if line.startswith(GPU_4090)]
    assert "secure $0.69" in line_4090 and "stock HIGH (EU-RO-1 HIGH, US-KS-2 LOW)" in line_4090


def test_acceptance_rest_v2_end_to_end_without_graphql(runpod_emulator: RunPodEmulator) -> None:
    """gpus | launch --wait | list | terminate with only the base URL and the key set: every
    request is REST v2, none is GraphQL."""
    gpus = only_base_url_and_key(runpod_emulator, "gpus")
    assert gpus.returncode == 0 and GPU_4090 in gpus.stdout, gpus.stderr
    launched = only_base_url_and_key(
        runpod_emulator, "--json", "launch", "--wait", "--timeout", "60"
    )
    assert launched.returncode == 0, launched.stderr
    pod_id = json.loads(launched.stdout)["pod"]["id"]
    listed = only_base_url_and_key(runpod_emulator, "list")
    assert listed.returncode == 0 and pod_id in listed.stdout
    gone = only_base_url_and_key(runpod_emulator, "terminate", pod_id)
    assert gone.returncode == 0, gone.stderr
    counts = runpod_emulator.request_counts()
    assert counts and all(route.split()[1].startswith("/v2/") for route in counts), counts
    assert counts["POST /v2/pods"] == 1 and counts["DELETE /v2/pods/{id}"] == 1
    assert runpod_emulator.contract_violations == []
    assert [p["desired_status"] for p in runpod_emulator.pods()] == ["TERMINATED"]


def test_failures_are_one_line_with_exit_codes(runpod_emulator: RunPodEmulator) -> None:
    bad_key = rp_launch(runpod_emulator, "list", RUNPOD_API_KEY="wrong-key-42")
    assert "RUNPOD_API_KEY" in one_line_error(bad_key, 3)
    assert "wrong-key-42" not in bad_key.stderr

    unknown = rp_launch(runpod_emulator, "launch", "--gpu", "NVIDIA GeForce RTX 9999")
    assert "unknown GPU type id(s): NVIDIA GeForce RTX 9999" in one_line_error(unknown, 4)

    runpod_emulator.set_stock(GPU_4090, 0)
    runpod_emulator.set_stock(GPU_A6000, 0)
    full = rp_launch(runpod_emulator, "--json", "launch", "--gpu", GPU_4090, "--gpu", GPU_A6000)
    assert f"{GPU_4090}: no stock (catalog availability NONE)" in one_line_error(full, 4)
    assert f"{GPU_A6000}: no stock" in full.stderr
    assert json.loads(full.stdout)["error"] == "NoCapacityError"

    bad_volume = rp_launch(runpod_emulator, "launch", "--network-volume", "vol-typo")
    assert "network volume vol-typo is not in this RunPod account" in one_line_error(bad_volume, 1)

    offline = rp_launch(
        runpod_emulator, "list", RUNPOD_API_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )
    assert "network error" in one_line_error(offline, 6)

    no_key = rp_launch(runpod_emulator, "gpus", RUNPOD_API_KEY="")
    assert "RUNPOD_API_KEY is not set" in one_line_error(no_key, 2)

    bad_api = rp_launch(runpod_emulator, "gpus", RUNPOD_API="soap")
    assert "RUNPOD_API='soap' is not a RunPod API" in one_line_error(bad_api, 2)
    assert runpod_emulator.pods() == []
    assert "POST /graphql" not in runpod_emulator.request_counts()


def test_graphql_is_chosen_by_runpod_api(runpod_emulator: RunPodEmulator) -> None:
    listed = rp_launch(runpod_emulator, "list", RUNPOD_API="graphql")
    assert listed.returncode == 0, listed.stderr
    assert set(runpod_emulator.request_counts()) == {"POST /graphql"}


def test_launch_under_429_waits_and_creates_once(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.fail_next(1, "429", operation="create_pod", retry_after=1)
    launched = rp_launch(runpod_emulator, "-v", "--json", "launch", "--gpu", GPU_4090)
    assert launched.returncode == 0, launched.stderr
    assert "waiting 1 s as Retry-After says" in launched.stderr
    assert runpod_emulator.request_counts()["POST /v2/pods"] == 2  # refused once, then created
    assert len(runpod_emulator.pods()) == 1
    rp_launch(runpod_emulator, "terminate", json.loads(launched.stdout)["pod"]["id"])


def test_no_stock_gpu_first_is_skipped_without_a_create(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.set_stock(GPU_4090, 0)
    launched = rp_launch(
        runpod_emulator, "-v", "--json", "launch", "--gpu", GPU_4090, "--gpu", GPU_A6000
    )
    assert launched.returncode == 0, launched.stderr
    assert f"skipping {GPU_4090}: no stock (catalog availability NONE)" in launched.stderr
    assert f"chose {GPU_A6000} in EU-RO-1" in launched.stderr
    assert runpod_emulator.request_counts()["POST /v2/pods"] == 1
    rp_launch(runpod_emulator, "terminate", json.loads(launched.stdout)["pod"]["id"])


@pytest.mark.slow
def test_wait_timeout_terminates_and_exits_5(runpod_emulator: RunPodEmulator) -> None:
    runpod_emulator.set_boot_delay(600)
    result = rp_launch(runpod_emulator, "launch", "--wait", "--timeout", "1")
    assert "not ready within 1 s" in one_line_error(result, 5)
    assert "it has been terminated" in result.stderr
    assert [p["desired_status"] for p in runpod_emulator.pods()] == ["TERMINATED"]


def test_launch_with_every_create_5xx_sends_four_and_says_one_line(
    runpod_emulator: RunPodEmulator,
) -> None:
    """rp-launch uses the client's create attempts (4) and nothing more; the user reads one line
    that says no pod by that name exists, with no advice to retry."""
    runpod_emulator.fail_next(100, "5xx", operation="create_pod")
    launched = rp_launch(runpod_emulator, "launch", "--gpu", GPU_4090, "--no-network-volume")
    line = one_line_error(launched, 1)
    assert "4 attempt(s); no pod by that name exists" in line and "retry" not in line.lower()
    assert runpod_emulator.request_counts()["POST /v2/pods"] == 4
    assert runpod_emulator.pods() == []
