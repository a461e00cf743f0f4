"""`rp-devstack up` lifecycle, and a local pod syncing its ComfyUI output to S3."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from runpod_helpers import spec

from rp_agent.keys import object_key
from rp_agent.r2 import R2Settings, make_r2_client
from rp_devstack.runpod_emulator import DEFAULT_API_KEY
from rp_devstack.stack import ENV_NAMES, Devstack
from rp_pipeline.integrations.runpod.resource import RunPodClient

RP_DEVSTACK = str(Path(sys.executable).with_name("rp-devstack"))


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        assert line.startswith("export ")
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value.strip("'")
    return env


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "rp-devstack up exited early"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_writes_env_and_sigterm_stops_every_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = subprocess.Popen(
        [RP_DEVSTACK, "up", "--state-dir", str(state), "--boot-delay", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_file(state / "env", up)
        env = read_env_file(state / "env")
        assert list(env) == list(ENV_NAMES)

        client = RunPodClient(
            env["RUNPOD_API_KEY"], env["RUNPOD_API_BASE_URL"], poll_interval_s=0.1
        )
        pod = client.launch(
            spec(network_volume_id=env["RUNPOD_NETWORK_VOLUME_ID"], env={"ENABLE_R2_SYNC": "true"}),
            "devstack-sigterm-test",
        )
        client.wait_until_ready(pod.id, deadline_s=60)
        children = psutil.Process(up.pid).children(recursive=True)
        # moto, standalone ComfyUI, and the pod's ComfyUI + rp-agent at least.
        assert len(children) >= 4

        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, output
    assert b"devstack stopped" in output
    assert [c.pid for c in children if not gone(c.pid)] == []
    assert not (state / "devstack.pid").exists()


@pytest.mark.slow
def test_local_pod_with_r2_sync_uploads_comfyui_output(devstack: Devstack) -> None:
    env = devstack.env
    client = RunPodClient(env["RUNPOD_API_KEY"], env["RUNPOD_API_BASE_URL"], poll_interval_s=0.1)
    pod_env = {
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": env["R2_ENDPOINT"],
        "R2_BUCKET": env["R2_BUCKET"],
        "R2_ACCESS_KEY_ID": "{{ RUNPOD_SECRET_R2_ACCESS_KEY_ID }}",
        "R2_SECRET_ACCESS_KEY": "{{ RUNPOD_SECRET_R2_SECRET_ACCESS_KEY }}",
    }
    pod = client.launch(
        spec(network_volume_id=env["RUNPOD_NETWORK_VOLUME_ID"], env=pod_env), "r2sync"
    )
    try:
        client.wait_until_ready(pod.id, deadline_s=60)
        local = devstack.emulator.local_pod(pod.id)
        assert local is not None and "agent" in local.processes
        # What ComfyUI's SaveVideo leaves in output/ (written in place, then closed).
        video = local.output_dir / "video" / "devstack_00001_.mp4"
        video.parent.mkdir(parents=True, exist_ok=True)
        video.write_bytes(os.urandom(256 * 1024))
        key = object_key("video/devstack_00001_.mp4", video.stat().st_mtime, pod.id)
        s3 = make_r2_client(
            R2Settings(
                env["R2_ENDPOINT"],
                env["R2_BUCKET"],
                env["R2_ACCESS_KEY_ID"],
                env["R2_SECRET_ACCESS_KEY"],
            )
        )
        deadline = time.monotonic() + 60
        while True:
            listed = s3.list_objects_v2(Bucket=env["R2_BUCKET"], Prefix=key).get("Contents", [])
            if listed:
                break
            agent_log = (local.root / "logs" / "agent.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"{key} never reached S3; agent log:\n{agent_log}"
            time.sleep(0.3)
        head = s3.head_object(Bucket=env["R2_BUCKET"], Key=key)
        assert head["ContentLength"] == 256 * 1024 and "sha256" in head["Metadata"]
    finally:
        client.terminate(pod.id)


def test_pods_die_with_a_killed_emulator(tmp_path: Path) -> None:
    """SIGKILL leaves no time for cleanup: the pods' guards must end their process groups."""
    emulator = subprocess.Popen(
        [sys.executable, "-m", "rp_devstack.runpod_emulator", "--state-dir", str(tmp_path),
         "--boot-delay", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        base_url = emulator.stdout.readline().strip().partition("=")[2]
        client = RunPodClient(DEFAULT_API_KEY, base_url, poll_interval_s=0.1)
        pod = client.launch(spec(env={"ENABLE_R2_SYNC": "false"}), "orphan-test")
        client.wait_until_ready(pod.id, deadline_s=60)
        pod_processes = psutil.Process(emulator.pid).children(recursive=True)
        assert len(pod_processes) >= 2  # guard + ComfyUI
    finally:
        emulator.kill()
        emulator.wait()
    deadline = time.monotonic() + 30
    while alive := [p.pid for p in pod_processes if not gone(p.pid)]:
        assert time.monotonic() < deadline, f"orphaned pod processes: {alive}"
        time.sleep(0.2)
