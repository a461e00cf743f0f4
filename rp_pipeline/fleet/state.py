"""What the op chain hands from one op to the next.

Only plain, secret-free values: the default IO manager pickles these into the instance's
storage, so a pod's env (which can hold credentials) is never part of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rp_agent.keys import filename_prefix
from rp_pipeline.integrations.r2.reports import LogCursor
from rp_pipeline.video_requests.model import VideoRequest
from rp_pipeline.workflows import (
    WorkflowError,
    WorkflowParamError,
    render_workflow,
    validate_params,
)
from rp_pipeline.workflows.loras import attach_loras


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


def plan_videos(
    specs: dict[str, VideoRequest], keys: list[str], run_id: str
) -> tuple[list[PlannedVideo], dict[str, str]]:
    """Each request rendered to its ComfyUI API JSON (a unique filename prefix per run and
    partition), or why its workflow refuses it: (planned videos, partition -> problem)."""
    problems: dict[str, str] = {}
    planned = []
    for key in keys:
        request = specs[key]
        params = {
            **request.workflow_params(),
            "filename_prefix": filename_prefix(request.workflow, key, run_id),
        }
        try:
            validate_params(request.workflow, params)
            rendered = render_workflow(request.workflow, params)
            api_json = attach_loras(rendered.api_json, request.lora_refs)
        except (WorkflowParamError, WorkflowError) as exc:
            problems[key] = str(exc)
            continue
        planned.append(
            PlannedVideo(
                partition_key=key,
                request={**request.to_dict(), "seed": rendered.seed},
                workflow_name=rendered.name,
                workflow_hash=rendered.workflow_hash,
                seed=rendered.seed,
                filename_prefix=rendered.filename_prefix,
                api_json=api_json,
            )
        )
    return planned, problems


@dataclass
class PodInfo:
    """One pod of the run's fleet. No token here: later ops read it back from the pod."""

    pod_id: str
    name: str
    gpu_type: str
    cost_per_hr: float
    launched_at: float
    # The pod's claim in the `runpod_pods` concurrency pool (freed when the pod is gone).
    slot_key: str = ""
    comfyui_url: str | None = None
    ready_at: float | None = None
    # The ComfyUI client id that queued this pod's prompts: ComfyUI sends a prompt's execution
    # events only to the client id that queued it, so every op waits with this same id.
    client_id: str = ""
    # When our terminate call for the pod was first made, and whether RunPod confirmed it.
    terminated_at: float | None = None
    terminate_confirmed: bool = False
    failure: str | None = None  # why the pod left the fleet early (never ready, died)
    interruptible: bool = False  # rented on the spot market: RunPod may take it back
    # An idle pod this run adopted: launched_at is claim time - adopted_idle_s, because the run
    # pays the idle time it took over (shown apart from busy time in the settled cost).
    adopted_idle_s: float = 0.0
    adopted_from_run: str | None = None
    # The LoRAs the pod fetched at its boot (workflows.loras.lora_ids): its idle lease says so.
    loras: tuple[str, ...] = ()
    # Released to idle for the next run instead of terminated: terminated_at is the release
    # time (this run's bill ends there) and the pod holds no run slot any more.
    kept_warm: bool = False
    # The pod's start phases in seconds, as its agent reported them (fleet.boot.boot_phases).
    boot: dict[str, float | int] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.terminated_at is None and self.failure is None


@dataclass
class Submitted:
    prompt_id: str
    number: int
    submitted_at: float
    pod_id: str = ""


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
    # Read from the same download, for the asset checks (which then need not fetch the video
    # again): the sha256 the uploader computed before uploading and who that was ("agent
    # receipt" | "pipeline upload"), and how many frames decode (or why decoding stopped).
    sha256_expected: str = ""
    sha256_expected_from: str = ""
    decoded_frames: int = 0
    decode_error: str | None = None


@dataclass
class BatchState:
    run_id: str
    videos: list[PlannedVideo]
    # The run's fleet by pod id, in launch order (pods that left early stay, with `failure`).
    pods: dict[str, PodInfo] = field(default_factory=dict)
    submitted: dict[str, Submitted] = field(default_factory=dict)
    records: dict[str, VideoRecord] = field(default_factory=dict)
    # Which pod produced (or last tried) each partition: the cost of a pod is shared by them.
    served_by: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    # Partitions moved off a pod RunPod took back (spot preemption): partition -> that pod's id.
    preempted: dict[str, str] = field(default_factory=dict)
    plan: Any = None  # rp_pipeline.money.plan.RunPlan, set by launch_pod before any pod
    # Where the forwarding of each pod's log lines into the run stopped (ops carry on from it).
    log_cursors: dict[str, LogCursor] = field(default_factory=dict)

    @property
    def partition_keys(self) -> list[str]:
        return [video.partition_key for video in self.videos]

    def live_pods(self) -> list[PodInfo]:
        return [pod for pod in self.pods.values() if pod.live]

    def video(self, partition_key: str) -> PlannedVideo:
        return next(v for v in self.videos if v.partition_key == partition_key)
