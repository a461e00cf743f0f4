"""Find each ComfyUI output in R2 under the agent's key, or upload it ourselves when it never comes.

The agent keys an object by the file's mtime day (`rp_agent.keys.object_key`). The pipeline does
not know the mtime, only ComfyUI's `execution_success` time, which is within seconds of it; around
midnight UTC the two can fall on different days, so the day before and after are candidates too.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
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

    visible_at is when this poll first saw it; an object already there on the first look has
    been visible since its LastModified (S3 gives seconds), so that is used instead.
    """
    first_look = time.time()
    head = r2.wait_for_any(keys, deadline_s=0)
    if head is not None:
        return head, min(head.last_modified, first_look)
    head = r2.wait_for_any(keys, deadline_s=deadline_s)
    if head is None:
        return None
    return head, head.seen_at


def upload_latency(head: ObjectHead, visible_at: float) -> float | None:
    close_time = head.metadata.get("close-time")
    if not close_time:
        return None
    try:
        return round(max(0.0, visible_at - float(close_time)), 3)
    except ValueError:
        return None


def harvest_video(
    *,
    r2: R2Resource,
    comfy: Any,
    output: Any,
    partition_key: str,
    prompt_id: str,
    pod_id: str,
    finished_at: float,
    generation_time_s: float | None,
    queue_wait_s: float | None,
    sync_enabled: bool,
    deadline_s: float,
) -> VideoRecord:
    relpath = output_relpath(output)
    keys = candidate_keys(relpath, finished_at, pod_id, r2.prefix)
    found = find_agent_object(r2, keys, deadline_s) if sync_enabled else None
    with tempfile.TemporaryDirectory(prefix="rp-harvest-") as tmp:
        local = Path(tmp) / Path(relpath).name
        if found is not None:
            head, visible_at = found
            source = "agent"
            r2.download(head.key, local)
        else:
            # Sync off, or the agent never delivered: fetch through ComfyUI and upload it ourselves.
            log.warning("%s not in R2 under %s; uploading it from ComfyUI /view", relpath, keys[0])
            comfy.download(output, local)
            digest = sha256_file(local)
            head = r2.upload_file(
                local,
                keys[0],
                metadata={"sha256": digest, "uploaded-by": "pipeline"},
                content_type="video/mp4",
            )
            visible_at = head.seen_at
            source = "pipeline_fallback"
        digest = sha256_file(local)
        claimed = head.metadata.get("sha256")
        if claimed and claimed != digest:
            raise RuntimeError(f"sha256 of {head.key} in R2 does not match its metadata")
        facts = probe(local).as_dict()
        poster = poster_markdown(poster_image(local), caption=partition_key)
    return VideoRecord(
        partition_key=partition_key,
        r2_key=head.key,
        r2_source=source,
        size_bytes=head.size,
        sha256=digest,
        facts=facts,
        generation_time_s=generation_time_s,
        queue_wait_s=queue_wait_s,
        upload_latency_s=upload_latency(head, visible_at) if source == "agent" else None,
        visible_at=visible_at,
        prompt_id=prompt_id,
        poster_markdown=poster,
    )


def day_of(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")
