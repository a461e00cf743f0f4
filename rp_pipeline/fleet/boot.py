"""A pod's boot as the pod reports it: its agent copies the pod's boot status (when each start
phase happened, how far the model download is) to `{prefix}/_rp/boot/<pod id>.json`. The run
shows the download's progress while it waits for the pod, and each partition carries the boot
phases of the pod that made it. Phase times are the pod's clock: only differences between them
are used, never against the run's clock."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent.keys import boot_key
from rp_pipeline.fleet.state import PodInfo
from rp_pipeline.integrations.r2.resource import R2Resource

log = logging.getLogger(__name__)

# A progress line at most this often per pod, however often the run polls.
PROGRESS_EVERY_S = 10.0


def read_boot_status(r2: R2Resource, pod_id: str) -> dict[str, Any] | None:
    """The pod's boot status, or None while there is none yet (early boot, or no R2 sync)."""
    try:
        if r2.head(boot_key(pod_id, r2.prefix)) is None:
            return None
        doc = json.loads(r2.get_bytes(boot_key(pod_id, r2.prefix)))
    except (BotoCoreError, ClientError, ValueError) as exc:
        log.debug("boot status of pod %s not readable: %s", pod_id, exc)
        return None
    return doc if isinstance(doc, dict) else None


def download_line(pod_id: str, status: dict[str, Any]) -> str | None:
    """ "pod abc: downloading models 31.2/80.4 GB, 410 MB/s, 2 min left" while it downloads."""
    models = status.get("models") or {}
    if models.get("state") != "downloading":
        return None
    done, total = models.get("bytes_done") or 0, models.get("bytes_total") or 0
    rate, eta = models.get("rate_bps") or 0, models.get("eta_s")
    left = (
        "? left"
        if eta is None
        else (f"{eta:.0f} s left" if eta < 120 else f"{eta / 60:.0f} min left")
    )
    return (
        f"pod {pod_id}: downloading models {done / 1e9:.1f}/{total / 1e9:.1f} GB, "
        f"{rate / 1e6:.0f} MB/s, {left}"
    )


def boot_phases(status: dict[str, Any]) -> dict[str, float | int]:
    """Seconds between the pod's start phases (pod clock), and what the model step did."""
    phases = status.get("phases") or {}
    out: dict[str, float | int] = {}

    def span(name: str, start: str, end: str) -> None:
        if isinstance(phases.get(start), int | float) and isinstance(phases.get(end), int | float):
            out[name] = round(max(0.0, phases[end] - phases[start]), 3)

    span("boot_models_s", "models_started", "models_verified")
    span("boot_comfyui_load_s", "comfyui_started", "comfyui_ready")
    span("boot_in_container_s", "container_started", "comfyui_ready")
    models = status.get("models") or {}
    for name in ("bytes_downloaded", "files_skipped", "files_total"):
        if isinstance(models.get(name), int):
            out[f"boot_models_{name}"] = models[name]
    return out


class BootWatch:
    """Reads the booting pods' statuses while the run waits for them: logs the download's
    progress, and keeps each pod's boot phases on its PodInfo once it is ready."""

    def __init__(self, r2: R2Resource, run_log: Any) -> None:
        self.r2 = r2
        self.run_log = run_log
        self.said_at: dict[str, float] = {}

    def poll(self, pods: list[PodInfo]) -> None:
        for pod in pods:
            if pod.ready_at is not None or not pod.live:
                continue
            status = read_boot_status(self.r2, pod.pod_id)
            line = download_line(pod.pod_id, status) if status else None
            now = time.monotonic()
            if line and now - self.said_at.get(pod.pod_id, 0.0) >= PROGRESS_EVERY_S:
                self.said_at[pod.pod_id] = now
                self.run_log.info(line)

    def record(self, pod: PodInfo) -> None:
        status = read_boot_status(self.r2, pod.pod_id)
        if status:
            pod.boot = boot_phases(status)
