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
