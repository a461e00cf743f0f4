"""Find each ComfyUI output in R2 from the pod's upload receipts, or upload it ourselves.

The agent on the pod lists every object it uploaded in receipts (`rp_agent.receipts`): exact
key, size, sha256 and the pod's own close / upload-done times. So the pipeline never guesses a
key: it waits for the receipt of ComfyUI's (subfolder, filename), and the upload latency is the
pod's measurement, transfer included. When the agent never delivers (sync disabled, agent
down), the file is fetched from ComfyUI's /view and uploaded from here.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_agent.receipts import Receipt
from rp_agent.uploader import file_sha256
from rp_pipeline.fleet.state import VideoRecord
from rp_pipeline.integrations.r2.keys import object_key, preview_png_key
from rp_pipeline.integrations.r2.reports import landed_at, wait_for_receipt
from rp_pipeline.integrations.r2.resource import ObjectHead, R2Resource
from rp_pipeline.media import (
    VIDEO_SUFFIXES,
    decode_all,
    png_bytes,
    poster_image,
    poster_markdown,
    probe,
)

log = logging.getLogger(__name__)

POSTER_WIDTH = 640


def output_relpath(output: Any) -> str:
    subfolder = (getattr(output, "subfolder", "") or "").strip("/")
    return f"{subfolder}/{output.filename}" if subfolder else str(output.filename)


def is_video_output(output: Any) -> bool:
    return str(output.filename).lower().endswith(VIDEO_SUFFIXES) and (
        getattr(output, "type", "output") == "output"
    )


@dataclass(frozen=True)
class Located:
    """A ComfyUI output that is now durably in R2 (the pod is no longer needed for it)."""

    head: ObjectHead
    visible_at: float
    source: str  # "agent" | "pipeline_fallback"
    receipt: Receipt | None = None  # the agent's report (source "agent")

    @property
    def upload_latency_s(self) -> float | None:
        """File closed -> object durable in R2, measured on the pod (None for the fallback)."""
        if self.receipt is None or self.receipt.upload_latency_s is None:
            return None
        return round(self.receipt.upload_latency_s, 4)


def head_from_receipt(receipt: Receipt) -> ObjectHead:
    return ObjectHead(
        key=receipt.key,
        size=receipt.size,
        metadata={"sha256": receipt.sha256},
        last_modified=receipt.upload_done,
        seen_at=time.time(),
    )


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
    """The agent's object for ComfyUI's `output` (from the pod's receipts), or, when no
    receipt arrives within `deadline_s`, the file fetched from ComfyUI `/view` and uploaded
    under the key the agent would have used."""
    relpath = output_relpath(output)
    receipt = wait_for_receipt(r2, pod_id, relpath, deadline_s) if sync_enabled else None
    if receipt is not None:
        landed = landed_at(r2, pod_id, receipt)
        return Located(head_from_receipt(receipt), landed, "agent", receipt)
    key = object_key(relpath, finished_at, pod_id, r2.prefix)
    # The agent may have uploaded it and lost its receipt (the pod died between the two): the
    # object at the agent's key is the video, whether or not ComfyUI still answers.
    uploaded = r2.head(key) if sync_enabled else None
    if uploaded is not None and uploaded.metadata.get("sha256"):
        log.warning(
            "no upload receipt for %s from pod %s, but its object is in R2", relpath, pod_id
        )
        return Located(uploaded, uploaded.seen_at, "agent")
    log.warning(
        "no upload receipt for %s from pod %s; uploading it from ComfyUI /view", relpath, pod_id
    )
    with tempfile.TemporaryDirectory(prefix="rp-fallback-") as tmp:
        local = comfy.download(output, Path(tmp) / Path(relpath).name)
        head = r2.upload_file(
            local,
            key,
            metadata={"sha256": file_sha256(local), "uploaded-by": "pipeline"},
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
    """Read the video back from R2 (what users will get), verify, probe, decode every frame
    and make a poster: the one download of the video in a run (the asset checks judge these
    facts, video_preview uses the poster)."""
    head = located.head
    with tempfile.TemporaryDirectory(prefix="rp-harvest-") as tmp:
        local = r2.download(head.key, Path(tmp) / Path(head.key).name)
        digest = file_sha256(local)
        claimed = head.metadata.get("sha256")
        if claimed and claimed != digest:
            raise RuntimeError(
                f"sha256 of {head.key} in R2 is {digest[:12]}..., the pod uploaded {claimed[:12]}..."
            )
        facts = probe(local).as_dict()
        image = poster_image(local)
        decoded = decode_all(local)
    # Stored now, while the frame is decoded, so video_preview need not fetch the video again.
    r2.put_bytes(preview_png_key(head.key), png_bytes(image, POSTER_WIDTH), "image/png")
    poster = poster_markdown(image, caption=partition_key)
    return VideoRecord(
        partition_key=partition_key,
        r2_key=head.key,
        r2_source=located.source,
        size_bytes=head.size,
        sha256=digest,
        facts=facts,
        generation_time_s=generation_time_s,
        queue_wait_s=queue_wait_s,
        upload_latency_s=located.upload_latency_s,
        visible_at=located.visible_at,
        prompt_id=prompt_id,
        poster_markdown=poster,
        sha256_expected=claimed or digest,
        sha256_expected_from="agent receipt" if located.receipt is not None else "pipeline upload",
        decoded_frames=decoded.frames,
        decode_error=decoded.error,
    )
