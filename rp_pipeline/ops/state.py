"""What the op chain hands from one op to the next.

Only plain, secret-free values: the default IO manager pickles these into the instance's
storage, so a pod's env (which can hold credentials) is never part of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PlannedVideo:
    """One validated request, rendered to ComfyUI API JSON and ready to queue."""

    partition_key: str
    request: dict[str, Any]
    workflow_name: str
    workflow_hash: str
    seed: int
    filename_prefix: str
    api_json: dict[str, Any]


@dataclass
class PodInfo:
    pod_id: str
    name: str
    gpu_type: str
    cost_per_hr: float
    launched_at: float


@dataclass
class Submitted:
    prompt_id: str
    number: int
    submitted_at: float


@dataclass
class VideoRecord:
    """A harvested video: everything its materialization reports except the batch's cost."""

    partition_key: str
    r2_key: str
    r2_source: str  # "agent" | "pipeline_fallback"
    size_bytes: int
    sha256: str
    facts: dict[str, Any]
    generation_time_s: float | None
    queue_wait_s: float | None
    upload_latency_s: float | None
    visible_at: float
    prompt_id: str
    poster_markdown: str | None = None


@dataclass
class BatchState:
    run_id: str
    videos: list[PlannedVideo]
    pod: PodInfo | None = None
    comfyui_url: str | None = None
    ready_at: float | None = None
    submitted: dict[str, Submitted] = field(default_factory=dict)
    records: dict[str, VideoRecord] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    last_object_at: float | None = None
    # Set by harvest_outputs, which terminates the moment the batch's last object is in R2.
    terminated_at: float | None = None

    @property
    def partition_keys(self) -> list[str]:
        return [video.partition_key for video in self.videos]
