"""The metadata a `generated_video` partition shows in the UI."""

from __future__ import annotations

from typing import Any

from dagster import MetadataValue

from rp_pipeline.fleet.boot import read_boot_status
from rp_pipeline.fleet.podlogs import agent_restarts
from rp_pipeline.fleet.renders import RenderMarker
from rp_pipeline.fleet.state import BatchState, PlannedVideo, PodInfo, VideoRecord
from rp_pipeline.fleet.warm_pods import split_billed_seconds
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.workflows.loras import parse_loras


def _maybe_float(value: float | None) -> Any:
    return MetadataValue.float(round(value, 3)) if value is not None else MetadataValue.null()


def object_metadata(record: VideoRecord, r2: R2Resource) -> dict[str, Any]:
    """What the video in R2 is: where, how big, its digest and probed facts, its poster."""
    facts = record.facts
    metadata: dict[str, Any] = {
        "poster": MetadataValue.md(record.poster_markdown or ""),
        "r2_key": MetadataValue.path(record.r2_key),
        "r2_bucket": r2.bucket,
        "r2_source": record.r2_source,
        # Where the video is, as text: an s3:// name is no link a browser can open. `open` is
        # the public link, or the command that prints a short-lived one.
        "r2_url": MetadataValue.text(r2.object_url(record.r2_key)),
        "open": r2.link_metadata(record.r2_key),
        "size_bytes": MetadataValue.int(record.size_bytes),
        "sha256": record.sha256,
        "width": MetadataValue.int(int(facts["width"])),
        "height": MetadataValue.int(int(facts["height"])),
        "frames": MetadataValue.int(int(facts["frames"])),
        "fps": MetadataValue.float(float(facts["fps"])),
        "duration_s": MetadataValue.float(float(facts["duration_s"])),
        "codec": str(facts.get("codec", "")),
        "upload_latency_s": _maybe_float(record.upload_latency_s),
    }
    return metadata


def video_metadata(
    *,
    record: VideoRecord,
    video: PlannedVideo,
    pod: PodInfo,
    r2: R2Resource,
    pod_seconds: float,
    cost_usd: float,
    batch_size: int,
    first_prompt_after_ready_s: float | None = None,
) -> dict[str, Any]:
    """Materialization metadata, written the moment the video is in R2. `cost_usd` is the pod
    time attributed to this video so far (since the pod's previous video landed); the settled
    figure follows as an AssetObservation when the run's pods are all terminated."""
    request = video.request
    return object_metadata(record, r2) | {
        "generation_time_s": _maybe_float(record.generation_time_s),
        "queue_wait_s": _maybe_float(record.queue_wait_s),
        "pod_id": pod.pod_id,
        "gpu_type": pod.gpu_type,
        "cost_per_hr": MetadataValue.float(pod.cost_per_hr),
        "pod_seconds": MetadataValue.float(round(pod_seconds, 3)),
        "batch_size": MetadataValue.int(batch_size),
        "cost_usd": MetadataValue.float(round(cost_usd, 6)),
        "cost_settled": False,
        "prompt": str(request.get("prompt", "")),
        "negative_prompt": str(request.get("negative_prompt", "")),
        "seed": MetadataValue.int(int(video.seed)),
        "workflow": video.workflow_name,
        "workflow_hash": video.workflow_hash,
        "comfyui_prompt_id": record.prompt_id,
        # The pod's boot, on the run's clock (create -> ComfyUI answering) and its own phases.
        "boot_s": _maybe_float(
            round(pod.ready_at - pod.launched_at - pod.adopted_idle_s, 3) if pod.ready_at else None
        ),
        **{name: MetadataValue.float(float(v)) for name, v in pod.boot.items()},
        "boot_ready_to_first_prompt_s": _maybe_float(first_prompt_after_ready_s),
        **start_image_metadata(request),
        **lora_metadata(request, r2, pod.pod_id),
    }


def lora_metadata(request: dict[str, Any], r2: R2Resource, pod_id: str) -> dict[str, Any]:
    """Which LoRAs the video was made with: name, source, strength and the sha256 of the file
    the pod loaded (as its boot status reports it; the request's own digest when it gave one)."""
    refs = parse_loras(request.get("loras"))
    if not refs:
        return {}
    status = read_boot_status(r2, pod_id) or {}
    on_pod = {
        str(item.get("name")): item for item in status.get("loras") or [] if isinstance(item, dict)
    }
    rows = [
        {
            "name": ref.name,
            "source": ref.source,
            "location": ref.location,
            "strength": ref.strength,
            "expert": ref.expert,
            "sha256": ref.sha256 or on_pod.get(ref.name, {}).get("sha256"),
        }
        for ref in refs
    ]
    return {"loras": MetadataValue.json(rows)}


def agent_metadata(state: BatchState, pod_id: str) -> dict[str, Any]:
    """How often the pod's agent was restarted by its supervisor, as its log lines told the
    run so far (0: it never died, or its restart line has not arrived yet)."""
    return {"agent_restarts": MetadataValue.int(agent_restarts(state.log_cursors, pod_id))}


def start_image_metadata(request: dict[str, Any]) -> dict[str, Any]:
    """Which start image the video began from (where it is in R2, its digest and size)."""
    image = request.get("start_image")
    if not image:
        return {}
    return {
        "start_image_r2_key": MetadataValue.path(str(image["r2_key"])),
        "start_image_sha256": str(image["sha256"]),
        "start_image_size_bytes": MetadataValue.int(int(image["size_bytes"])),
    }


def recovered_metadata(
    record: VideoRecord, r2: R2Resource, marker: RenderMarker, request: dict[str, Any]
) -> dict[str, Any]:
    """A video an earlier run paid for and left in R2 unmaterialized (it died first): what is
    known of it. Its GPU time was that run's; this run spends nothing on it."""
    return object_metadata(record, r2) | {
        "recovered_from_run": marker.run_id,
        "pod_id": marker.pod_id,
        "gpu_type": marker.gpu_type,
        "cost_per_hr": MetadataValue.float(marker.cost_per_hr),
        "cost_usd": MetadataValue.float(0.0),
        "cost_settled": True,
        "prompt": str(request.get("prompt", "")),
        "negative_prompt": str(request.get("negative_prompt", "")),
        "workflow": str(request.get("workflow", "")),
        "comfyui_prompt_id": marker.prompt_id,
        **start_image_metadata(request),
        **lora_metadata(request, r2, marker.pod_id),
    }


def preempted_metadata(state: BatchState, key: str) -> dict[str, Any]:
    """`preempted` and the pod's id for a partition moved off a pod RunPod took back."""
    pod_id = state.preempted.get(key)
    return {"preempted": True, "preempted_pod_id": pod_id} if pod_id else {}


def settled_metadata(
    *,
    cost_usd: float,
    pod: PodInfo | None,
    now: float,
    produced: bool,
    pod_last_visible_at: float | None = None,
) -> dict[str, Any]:
    """The AssetObservation a partition gets once every pod of its run is terminated: its share
    of the billed pod time (the shares of a run add up to the billed cost of its pods)."""
    metadata: dict[str, Any] = {
        "cost_usd": MetadataValue.float(round(cost_usd, 6)),
        "cost_settled": True,
        "produced": produced,
    }
    if pod is not None:
        billed = (pod.terminated_at or now) - pod.launched_at
        metadata |= {
            "pod_id": pod.pod_id,
            "pod_billed_s": MetadataValue.float(round(billed, 3)),
            "terminate_confirmed": pod.terminate_confirmed,
            "pod_kept_warm": pod.kept_warm,
        }
        # Idle time an adopted pod brought with it is billed to this run, shown apart.
        split = split_billed_seconds(billed, pod.adopted_idle_s, pod.cost_per_hr)
        metadata |= {k: MetadataValue.float(v) for k, v in split.metadata().items()}
        if pod_last_visible_at is not None and pod.terminated_at is not None:
            # How promptly the pod was terminated after its last video was in R2.
            lag = max(0.0, pod.terminated_at - pod_last_visible_at)
            metadata["terminate_after_last_object_s"] = MetadataValue.float(round(lag, 3))
    return metadata
