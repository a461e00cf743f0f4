"""Find each ComfyUI output in R2 under the agent's key, or upload it ourselves when it never comes.

The agent keys an object by the file's mtime day (`rp_agent.keys.object_key`). The pipeline does
not know the mtime, only ComfyUI's `execution_success` time, which is within seconds of it; around
midnight UTC the two can fall on different days, so the day before and after are candidates too.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rp_agent.keys import object_key
from rp_pipeline.media import VIDEO_SUFFIXES, poster_image, poster_markdown, probe
from rp_pipeline.ops.state import VideoRecord
from rp_pipeline.resources.r2 import ObjectHead, R2Resource

log = logging.getLogger(__name__)

DAY_S = 86400.0


def output_relpath(output: Any) -> str:
    subfolder = (getattr(output, "subfolder", "") or "").strip("/")
    return f"{subfolder}/{output.filename}" if subfolder else str(output.filename)


def is_video_output(output: Any) -> bool:
    return str(output.filename).lower().endswith(VIDEO_SUFFIXES) and (
        getattr(output, "type", "output") == "output"
    )


def candidate_keys(relpath: str, finished_at: float, pod_id: str, prefix: str) -> list[str]:
    """The agent's key for each plausible mtime day, the likeliest first."""
    days = [finished_at, finished_at - DAY_S, finished_at + DAY_S]
    return list(dict.fromkeys(object_key(relpath, t, pod_id, prefix) for t in days))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_agent_object(
    r2: R2Resource, keys: list[str], deadline_s: float
) -> tuple[ObjectHead, float] | None:
    """(head, visible_at) of the first candidate to appear, or None after the deadline.

    visible_at is when this poll first saw it. An object already there on the first look became
    visible at some unknown earlier moment: no earlier than the agent's `upload-start` nor than
    LastModified (whole seconds on S3), so the later of the two is the estimate.
    """
    head = r2.wait_for_any(keys, deadline_s=0)
    if head is not None:
        started = _float(head.metadata.get("upload-start"))
        return head, min(head.seen_at, max(head.last_modified, started or 0.0))
    head = r2.wait_for_any(keys, deadline_s=deadline_s)
    if head is None:
        return None
    return head, head.seen_at


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def upload_latency(head: ObjectHead, visible_at: float) -> float | None:
    close_time = _float(head.metadata.get("close-time"))
    if close_time is None:
        return None
    return round(max(0.0, visible_at - close_time), 3)


@dataclass(frozen=True)
class Located:
    """A ComfyUI output that is now durably in R2 (the pod is no longer needed for it)."""

    head: ObjectHead
    visible_at: float
    source: str  # "agent" | "pipeline_fallback"


def locate_output(
    *,
    r2: R2Resource,
    comfy: Any,
    output: Any,
    pod_id: str,
    finished_at: float,
    sync_enabled: bool,
    deadline_s: float,
) -> Located:
    """Find the agent's object, or upload the file from ComfyUI `/view` ourselves."""
    relpath = output_relpath(output)
    keys = candidate_keys(relpath, finished_at, pod_id, r2.prefix)
    found = find_agent_object(r2, keys, deadline_s) if sync_enabled else None
    if found is not None:
        return Located(found[0], found[1], "agent")
    log.warning("%s not in R2 under %s; uploading it from ComfyUI /view", relpath, keys[0])
    with tempfile.TemporaryDirectory(prefix="rp-fallback-") as tmp:
        local = comfy.download(output, Path(tmp) / Path(relpath).name)
        head = r2.upload_file(
            local,
            keys[0],
            metadata={"sha256": sha256_file(local), "uploaded-by": "pipeline"},
            content_type="video/mp4",
        )
    return Located(head, head.seen_at, "pipeline_fallback")


def inspect_video(
    *,
    r2: R2Resource,
    located: Located,
    partition_key: str,
    prompt_id: str,
    generation_time_s: float | None,
    queue_wait_s: float | None,
) -> VideoRecord:
    """Read the video back from R2 (what users will get), verify, probe, and make a poster."""
    head = located.head
    with tempfile.TemporaryDirectory(prefix="rp-harvest-") as tmp:
        local = r2.download(head.key, Path(tmp) / Path(head.key).name)
        digest = sha256_file(local)
        claimed = head.metadata.get("sha256")
        if claimed and claimed != digest:
            raise RuntimeError(f"sha256 of {head.key} in R2 does not match its metadata")
        facts = probe(local).as_dict()
        poster = poster_markdown(poster_image(local), caption=partition_key)
    return VideoRecord(
        partition_key=partition_key,
        r2_key=head.key,
        r2_source=located.source,
        size_bytes=head.size,
        sha256=digest,
        facts=facts,
        generation_time_s=generation_time_s,
        queue_wait_s=queue_wait_s,
        upload_latency_s=upload_latency(head, located.visible_at)
        if located.source == "agent"
        else None,
        visible_at=located.visible_at,
        prompt_id=prompt_id,
        poster_markdown=poster,
    )


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")
