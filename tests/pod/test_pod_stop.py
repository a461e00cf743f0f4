"""A pod stop is quick: every process of a pod (ComfyUI, the token proxy, the sync agent, the
lease watcher) exits by itself on SIGTERM, with a client's WebSocket still open through the
proxy, so the SIGKILL fallback of a stop is never needed. Real processes of a devstack local pod
(they run as docker/start.sh runs them on a real pod, which stops them the same way)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import websocket

from rp_agent.r2 import R2Settings
from rp_devstack.local_pods import LocalPod, end_process_group
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token

from .helpers import wait_until


def test_every_process_of_a_pod_exits_on_sigterm(
    tmp_path: Path, r2_settings: R2Settings, caplog: pytest.LogCaptureFixture
) -> None:
    token = new_pod_token()
    env = {
        POD_TOKEN_ENV: token,
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
        "RP_POD_LEASE_S": "300",  # the watcher runs, and the lease does not lapse in the test
    }
    # The API is never called (the lease does not lapse): a closed port stands in for RunPod.
    pod = LocalPod("stop-test", tmp_path / "pod", env, api_base_url="http://127.0.0.1:9")
    pod.api_key = "pod-key"
    pod.start()
    processes = dict(pod.processes)
    try:
        assert set(processes) == {"comfyui", "proxy", "agent", "lease"}
        logs = tmp_path / "pod" / "logs"
        wait_until(pod.comfy_listening, "ComfyUI and the proxy listening")
        wait_until(lambda: "watching" in (logs / "agent.log").read_text(), "the agent watching")
        wait_until(lambda: "watching lease" in (logs / "lease.log").read_text(), "the watcher")
        # A client with its event socket open through the proxy, as the pipeline keeps one.
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{pod.comfy_port}/ws?clientId=stop-test",
            header=[f"Authorization: Bearer {token}"],
            timeout=10,
        )
        try:
            assert ws.recv()  # ComfyUI's first status message came through the bridge
            with caplog.at_level(logging.WARNING, logger="rp_devstack.local_pods"):
                pod.stop()
        finally:
            ws.close()
    finally:
        pod.kill()
    pids = {proc.pid: name for name, proc in processes.items()}
    assert "ignored SIGTERM" not in caplog.text, pids
    # Exit status 0 from each: a clean exit on SIGTERM, not the SIGKILL fallback (-9).
    assert {name: proc.returncode for name, proc in processes.items()} == dict.fromkeys(
        processes, 0
    )


def test_the_proxy_closes_open_websockets_on_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy ended while ComfyUI still runs (start.sh ends ComfyUI first, but a browser's
    socket may be open at any time): its open bridges are closed, not waited for."""
    token = new_pod_token()
    env = {POD_TOKEN_ENV: token, "ENABLE_R2_SYNC": "false", "RP_POD_LEASE_S": "0"}
    pod = LocalPod("stop-proxy", tmp_path / "pod", env)
    pod.start()
    try:
        wait_until(pod.comfy_listening, "ComfyUI and the proxy listening")
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{pod.comfy_port}/ws?clientId=stop-proxy",
            header=[f"Authorization: Bearer {token}"],
            timeout=10,
        )
        try:
            assert ws.recv()
            proxy = pod.processes["proxy"]
            with caplog.at_level(logging.WARNING, logger="rp_devstack.local_pods"):
                end_process_group(proxy, 5.0)
        finally:
            ws.close()
    finally:
        pod.stop()
    assert "ignored SIGTERM" not in caplog.text
    assert proxy.returncode == 0
