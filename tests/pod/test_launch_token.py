"""`rp-launch` and the pod token, as subprocesses against the emulator: `launch` gives each pod a
fresh token (never printed, not in `--json`), `wait` probes through the pod's proxy with it, and
`open` prints the one URL that carries it, which a browser trades for a cookie.
"""

from __future__ import annotations

import json

import requests

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV
from tests.rp_launch import one_line_error
from tests.rp_launch import only_base_url_and_key as rp_launch

GPU = "NVIDIA GeForce RTX 4090"


def test_launch_makes_a_token_that_only_open_prints(runpod_emulator: RunPodEmulator) -> None:
    launched = rp_launch(
        runpod_emulator, "launch", "--gpu", GPU, "--no-network-volume", "--wait",
        "--timeout", "60", "--json",
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr
    pod_id = json.loads(launched.stdout)["pod"]["id"]
    [row] = [p for p in runpod_emulator.pods() if p["id"] == pod_id]
    token = row["env"][POD_TOKEN_ENV]
    assert len(token) >= 40
    assert row["env"]["RP_POD_LEASE_S"] == "0"  # a hand-launched pod has no run to renew a lease
    assert token not in launched.stdout + launched.stderr
    assert POD_TOKEN_ENV in json.loads(launched.stdout)["pod"]["env"]  # its name, not its value

    opened = rp_launch(runpod_emulator, "open", pod_id)
    assert opened.returncode == 0, opened.stderr
    url = opened.stdout.strip()
    assert url.endswith(f"/?token={token}")
    comfy_url = json.loads(launched.stdout)["comfyui_url"]
    assert url.startswith(comfy_url)

    assert requests.get(f"{comfy_url}/system_stats", timeout=10).status_code == 401
    browser = requests.Session()
    landing = browser.get(url, timeout=10)  # the redirect drops the token, the cookie stays
    assert landing.url == f"{comfy_url}/"
    assert browser.get(f"{comfy_url}/system_stats", timeout=10).status_code == 200

    denied = rp_launch(runpod_emulator, "--json", "open", pod_id)
    assert "no --json form" in one_line_error(denied, 2)
    assert token not in denied.stdout + denied.stderr
    assert rp_launch(runpod_emulator, "terminate", pod_id).returncode == 0
    assert "does not exist" in one_line_error(rp_launch(runpod_emulator, "open", pod_id), 2)


def test_open_refuses_a_pod_without_token(runpod_emulator: RunPodEmulator) -> None:
    client = RunPodClient(runpod_emulator.api_key, runpod_emulator.base_url)
    pod = client.launch(PodSpec(image="local/comfyui:test", gpu_types=[GPU]), "no-token-run")
    try:
        line = one_line_error(rp_launch(runpod_emulator, "open", pod.id), 2)
        assert f"launched without {POD_TOKEN_ENV}" in line
    finally:
        client.terminate(pod.id)
