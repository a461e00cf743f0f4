"""The boot status file (start phases + model download progress) and its copy in the bucket."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from rp_agent import bootstatus
from rp_agent.keys import boot_key

from .helpers import AgentRun, agent_env, wait_for


def test_phases_keep_their_first_time_and_models_section_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state" / "boot.json"
    bootstatus.update(path, phase="container_started", now=10.0)
    bootstatus.update(path, models={"state": "downloading", "bytes_done": 1}, now=11.0)
    bootstatus.update(path, phase="container_started", now=12.0)  # a re-run keeps the first
    doc = bootstatus.update(path, phase="models_verified", models={"state": "verified"}, now=13.0)

    assert doc == json.loads(path.read_text())
    assert doc["phases"] == {"container_started": 10.0, "models_verified": 13.0}
    assert doc["models"] == {"state": "verified"}
    assert doc["updated"] == 13.0


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "boot.json"
    names = list(bootstatus.PHASES)
    threads = [
        threading.Thread(target=bootstatus.update, args=(path,), kwargs={"phase": name})
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(json.loads(path.read_text())["phases"]) == sorted(names)


def test_boot_phase_command(tmp_path: Path) -> None:
    path = tmp_path / "boot.json"
    env = {"RP_BOOT_STATUS": str(path), "RUNPOD_POD_ID": "pod7", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "rp_agent.cli", "boot-phase"]

    ok = subprocess.run([*command, "comfyui_ready"], env=env, capture_output=True, text=True)
    wrong = subprocess.run([*command, "lunch"], env=env, capture_output=True, text=True)
    unset = subprocess.run(
        [*command, "comfyui_ready"], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )

    assert ok.returncode == 0, ok.stderr
    doc = json.loads(path.read_text())
    assert doc["pod_id"] == "pod7"
    assert "comfyui_ready" in doc["phases"]
    assert wrong.returncode == 2 and "invalid choice: 'lunch'" in wrong.stderr
    assert unset.returncode == 2
    assert "RP_BOOT_STATUS is not set" in unset.stderr
    assert "Traceback" not in unset.stderr + wrong.stderr


def test_publisher_copies_the_file_when_it_changes(tmp_path: Path, r2_settings, r2_client) -> None:
    path = tmp_path / "boot.json"
    key = boot_key("pod9", "outputs")
    publisher = bootstatus.BootPublisher(r2_client, r2_settings.bucket, "pod9", "outputs", path)

    assert publisher.publish() is False  # no file yet: nothing to copy
    bootstatus.update(path, phase="container_started")
    assert publisher.publish() is True
    assert publisher.publish() is False  # unchanged: not written again
    bootstatus.update(path, models={"state": "downloading", "bytes_done": 5, "bytes_total": 9})
    assert publisher.publish() is True

    body = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)["Body"].read()
    assert json.loads(body) == json.loads(path.read_text())
    assert key == "outputs/_rp/boot/pod9.json"


def test_running_agent_copies_the_boot_status_to_the_bucket(
    tmp_path: Path, watch_dir: Path, r2_settings, r2_client
) -> None:
    status = tmp_path / "boot.json"
    env = agent_env(r2_settings, RP_BOOT_STATUS=str(status))
    run = AgentRun(
        watch_dir=watch_dir,
        state_dir=tmp_path / "state",
        env=env,
        log_path=tmp_path / "agent.log",
        extra_args=["--rescan-interval", "2"],
    )
    key = boot_key(env["RUNPOD_POD_ID"], "outputs")

    def published() -> dict[str, object] | None:
        try:
            body = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)["Body"].read()
        except r2_client.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    bootstatus.update(status, phase="container_started")
    run.start()
    try:
        wait_for(lambda: (published() or {}).get("phases", {}).get("container_started"))
        bootstatus.update(status, models={"state": "downloading", "bytes_done": 3})
        wait_for(lambda: (published() or {}).get("models", {}).get("bytes_done") == 3)
    finally:
        run.stop()
    assert published() == json.loads(status.read_text())
