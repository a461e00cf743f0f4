"""Which run rendered what, kept in R2 beside the pods' receipts: a marker per queued prompt
(`{prefix}/_rp/renders/<partition>/<run8>.json`: run, pod, filename prefix). A run that died
after its pod's agent uploaded a video leaves that video unmaterialized; the next run that is
asked for the partition finds it through the marker and the pod's receipt, and materializes
it from R2 instead of paying for it again."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent.receipts import Receipt
from rp_pipeline.fleet.state import BatchState, PodInfo, Submitted
from rp_pipeline.integrations.r2.keys import render_marker_key, render_markers_prefix
from rp_pipeline.integrations.r2.reports import refresh_receipts
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.media import VIDEO_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderMarker:
    partition_key: str
    run_id: str
    pod_id: str
    gpu_type: str
    cost_per_hr: float
    filename_prefix: str
    prompt_id: str
    submitted_at: float


def renders_prefix(r2: R2Resource, partition_key: str) -> str:
    return render_markers_prefix(partition_key, r2.prefix)


def note_submitted(state: BatchState, r2: R2Resource, pod: PodInfo, key: str, sub: Any) -> None:
    """Record a prompt ComfyUI accepted: in the run's state, and as a marker in R2 (best
    effort: without it a dead run's video is generated again, never lost)."""
    state.submitted[key] = Submitted(
        sub.prompt_id, int(sub.number), float(sub.submitted_at), pod.pod_id
    )
    state.served_by[key] = pod.pod_id
    marker = RenderMarker(
        partition_key=key, run_id=state.run_id, pod_id=pod.pod_id, gpu_type=pod.gpu_type,
        cost_per_hr=pod.cost_per_hr, filename_prefix=state.video(key).filename_prefix,
        prompt_id=sub.prompt_id, submitted_at=float(sub.submitted_at or time.time()),
    )  # fmt: skip
    try:
        r2.put_bytes(
            render_marker_key(key, state.run_id, r2.prefix),
            json.dumps(asdict(marker)).encode(),
            "application/json",
        )
    except (BotoCoreError, ClientError) as exc:
        log.warning("could not record the render of %s in R2: %s", key, type(exc).__name__)


def render_markers(r2: R2Resource, partition_key: str) -> list[RenderMarker]:
    """Every run's marker for the partition, newest submission first."""
    markers = []
    for page in r2.iter_keys(renders_prefix(r2, partition_key)):
        for key in page.keys:
            try:
                markers.append(RenderMarker(**json.loads(r2.get_bytes(key))))
            except (ValueError, TypeError):
                log.warning("unreadable render marker %s skipped", key)
    return sorted(markers, key=lambda m: m.submitted_at, reverse=True)


def receipt_for_prefix(r2: R2Resource, pod_id: str, prefix: str) -> Receipt | None:
    """The pod's upload receipt of a video rendered under `prefix`, if its agent got it into R2
    (a pod that died, or a run that did: the video is collected, never rendered a second time)."""
    book = refresh_receipts(r2, pod_id)
    with book.lock:
        found = [
            r
            for path, r in book.by_path.items()
            if path.startswith(prefix) and path.lower().endswith(VIDEO_SUFFIXES)
        ]
    return max(found, key=lambda r: r.seq) if found else None
