"""The pod's boot as the run sees it: the download's progress while it waits for the pod, and
the boot phases each partition carries (read from the status the pod's agent puts in R2)."""

from __future__ import annotations

import json
import time
from typing import Any

from rp_agent.keys import boot_key
from rp_pipeline.fleet.boot import BootWatch, boot_phases, download_line
from rp_pipeline.fleet.state import PodInfo
from tests.pipeline.helpers import r2_now

STATUS: dict[str, Any] = {
    "pod_id": "podboot1",
    "phases": {
        "container_started": 1000.0,
        "models_started": 1001.0,
        "models_verified": 1121.5,
        "comfyui_started": 1122.0,
        "comfyui_ready": 1140.25,
    },
    "models": {
        "state": "downloading",
        "bytes_done": 31_200_000_000,
        "bytes_total": 80_400_000_000,
        "rate_bps": 410_000_000,
        "eta_s": 120,
        "files_total": 12,
        "files_skipped": 3,
        "bytes_downloaded": 31_200_000_000,
    },
}


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)


def test_the_download_line_reads_like_the_pod_log() -> None:
    assert download_line("abc", STATUS) == (
        "pod abc: downloading models 31.2/80.4 GB, 410 MB/s, 2 min left"
    )
    assert download_line("abc", {**STATUS, "models": {"state": "verified"}}) is None


def test_boot_phases_are_differences_on_the_pods_clock() -> None:
    phases = boot_phases(STATUS)
    assert phases == {
        "boot_models_s": 120.5,
        "boot_comfyui_load_s": 18.25,
        "boot_in_container_s": 140.25,
        "boot_models_bytes_downloaded": 31_200_000_000,
        "boot_models_files_skipped": 3,
        "boot_models_files_total": 12,
    }


def test_the_watch_logs_progress_and_keeps_the_phases(pipeline_env: dict[str, str]) -> None:
    r2 = r2_now()
    pod = PodInfo(pod_id="podboot1", name="p", gpu_type="g", cost_per_hr=1.0, launched_at=0.0)
    run_log = Lines()
    watch = BootWatch(r2, run_log)
    watch.poll([pod])
    assert run_log.lines == []  # no status yet: no news, no error
    r2.put_bytes(boot_key("podboot1", r2.prefix), json.dumps(STATUS).encode(), "application/json")
    watch.poll([pod])
    watch.poll([pod])  # within PROGRESS_EVERY_S: said once
    assert run_log.lines == ["pod podboot1: downloading models 31.2/80.4 GB, 410 MB/s, 2 min left"]
    pod.ready_at = time.time()
    watch.record(pod)
    assert pod.boot["boot_models_s"] == 120.5


def test_a_run_shows_the_download_and_each_partition_its_pods_boot(
    devstack: Any, instance: Any, resources: dict[str, Any], prompts_dir: Any
) -> None:
    """End to end on the devstack: while the pod boots (RunPod's runtime 8 s after the create),
    its boot status says the models are downloading (written into the pod's own status file,
    which its agent ships to R2 as on RunPod); the run log shows the progress line, and the
    partition's metadata carries the pod's boot phases."""
    import threading

    from rp_agent import bootstatus
    from tests.pipeline.helpers import (
        generate,
        latest_by_partition,
        register_requests,
        run_messages,
        write_prompts,
    )

    [key] = write_prompts(prompts_dir, "boot", 1)
    register_requests(instance, resources)
    emulator = devstack.emulator
    before = {p["id"] for p in emulator.pods()}
    stop = threading.Event()

    def downloading() -> None:
        while not stop.is_set():
            for pod in emulator.pods():
                local = emulator.local_pod(pod["id"]) if pod["id"] not in before else None
                if local is not None and local.boot_status.exists():
                    bootstatus.update(local.boot_status, models=STATUS["models"])
                    before.add(pod["id"])
            time.sleep(0.1)

    thread = threading.Thread(target=downloading, daemon=True)
    delay = emulator.boot_delay_s
    emulator.set_boot_delay(8.0)
    thread.start()
    try:
        result = generate(instance, resources, [key])
    finally:
        stop.set()
        thread.join(timeout=5)
        emulator.set_boot_delay(delay)
    assert result.success
    messages = run_messages(instance, result.run_id)
    assert any("downloading models 31.2/80.4 GB, 410 MB/s, 2 min left" in m for m in messages)
    metadata = latest_by_partition(instance)[key]
    assert metadata["boot_s"] >= 8.0  # the run's clock: create -> ComfyUI answering
    assert metadata["boot_models_bytes_downloaded"] == 31_200_000_000
    assert metadata["boot_in_container_s"] >= 0
    assert 0 <= metadata["boot_ready_to_first_prompt_s"] < 30
