"""What a video has cost on each GPU type, measured from the instance's own `generated_video` events.

A row per GPU type x workflow x resolution x frame-count class: how many videos, their median
generation seconds (the prompt's run time in ComfyUI), median billed pod seconds per video and
dollars per video. Billed time includes everything the pod billed for those videos:

- Each video's settled share of its pod (the `cost_settled` observation written when the run's
  pods are gone; the materialization's provisional `cost_usd` until then), which already holds
  the boot (paid by a pod's first video) and the time of prompts that failed before it.
- Then, per pod and run, what no produced video paid: the idle time an adopted warm pod brought
  with it (`pod_idle_cost_usd`) and the settled cost of partitions it failed.

The pod's cost for a class of videos (same workflow, resolution, frame class) is spread evenly
over those videos, so the boot counts in every video's billed seconds, not only the first one's;
the pod's idle and failed time is spread evenly over every video it produced in the run. Videos
an earlier run paid for and a later one only recovered from R2 cost nothing and are left out.
`$ per video` is the class's total over its videos; billed seconds are that cost at the pod's $/h.

Plain functions of (run id, partition, metadata) rows, so they are tested without a run;
`read_events` gets the rows from a Dagster instance.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rp_pipeline.asset_keys import GENERATED_VIDEO

# Frame-count classes: a video is in the first class whose bound it does not pass (WAN's
# 33/49/81/121-frame clips each fall in their own).
FRAME_BOUNDS = (33, 49, 81, 121)
# How many recent events are read: enough for many batches, bounded so a big history stays fast.
HISTORY = 5000


@dataclass(frozen=True)
class VideoEvent:
    """One event of `generated_video`: a materialization or a settled-cost observation."""

    run_id: str
    partition: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class VideoSample:
    gpu_type: str
    workflow: str
    resolution: str  # "1280x704", "?" when unknown
    frames: str  # the frame-count class, e.g. "<=33"
    generation_s: float | None
    billed_s: float
    cost_usd: float


@dataclass(frozen=True)
class CostRow:
    gpu_type: str
    workflow: str
    resolution: str
    frames: str
    videos: int
    median_generation_s: float | None
    median_billed_s: float
    usd_per_video: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_type": self.gpu_type,
            "workflow": self.workflow,
            "resolution": self.resolution,
            "frames": self.frames,
            "videos": self.videos,
            "median_generation_s": self.median_generation_s,
            "median_billed_s": self.median_billed_s,
            "usd_per_video": self.usd_per_video,
        }


def frame_class(frames: Any) -> str:
    number = _number(frames)
    if number is None:
        return "?"
    for bound in FRAME_BOUNDS:
        if number <= bound:
            return f"<={bound}"
    return f">{FRAME_BOUNDS[-1]}"


def resolution_of(width: Any, height: Any) -> str:
    w, h = _number(width), _number(height)
    return f"{int(w)}x{int(h)}" if w and h else "?"


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    entry = metadata.get(key)
    return getattr(entry, "value", entry)


def _number(raw: Any) -> float | None:
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def samples(
    materializations: Iterable[VideoEvent], observations: Iterable[VideoEvent]
) -> list[VideoSample]:
    """Each produced video with its billed seconds and cost (see the module's docstring)."""
    settled: dict[tuple[str, str], Mapping[str, Any]] = {}
    for event in observations:
        if _value(event.metadata, "cost_settled") is True:
            settled.setdefault((event.run_id, event.partition), event.metadata)
    # Per (run, pod): what produced videos did not pay (adopted idle time, failed partitions).
    unpaid: dict[tuple[str, str], float] = defaultdict(float)
    idle_seen: set[tuple[str, str]] = set()
    for (run_id, _), md in settled.items():
        pod = (run_id, str(_value(md, "pod_id") or ""))
        if pod[1] and pod not in idle_seen:
            idle_seen.add(pod)
            unpaid[pod] += _number(_value(md, "pod_idle_cost_usd")) or 0.0
        if pod[1] and _value(md, "produced") is False:
            unpaid[pod] += _number(_value(md, "cost_usd")) or 0.0
    groups: dict[tuple[str, str, str, str, str, str], list[tuple[float | None, float, float]]]
    groups = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for event in materializations:
        md = event.metadata
        if (event.run_id, event.partition) in seen or _value(md, "recovered_from_run"):
            continue
        seen.add((event.run_id, event.partition))
        price = _number(_value(md, "cost_per_hr"))
        share = settled.get((event.run_id, event.partition), md)
        cost = _number(_value(share, "cost_usd"))
        if not price or cost is None:
            continue
        key = (
            event.run_id,
            str(_value(md, "pod_id") or ""),
            str(_value(md, "gpu_type") or "?"),
            str(_value(md, "workflow") or "?"),
            resolution_of(_value(md, "width"), _value(md, "height")),
            frame_class(_value(md, "frames")),
        )
        groups[key].append((_number(_value(md, "generation_time_s")), cost, price))
    pod_videos: dict[tuple[str, str], int] = defaultdict(int)
    for key, videos in groups.items():
        pod_videos[key[:2]] += len(videos)
    out = []
    for (run_id, pod_id, gpu, workflow, resolution, frames), videos in groups.items():
        extra = unpaid.get((run_id, pod_id), 0.0) / pod_videos[(run_id, pod_id)]
        each = sum(cost for _, cost, _ in videos) / len(videos) + extra
        for generation_s, _, price in videos:
            out.append(
                VideoSample(
                    gpu, workflow, resolution, frames, generation_s, each / price * 3600.0, each
                )
            )
    return out


def cost_rows(videos: Iterable[VideoSample], by_size: bool = True) -> list[CostRow]:
    """One row per GPU type x workflow (x resolution x frame class unless `by_size` is False,
    then those columns read "all"), cheapest per video first within each workflow."""
    groups: dict[tuple[str, str, str, str], list[VideoSample]] = defaultdict(list)
    for v in videos:
        size = (v.resolution, v.frames) if by_size else ("all", "all")
        groups[(v.gpu_type, v.workflow, *size)].append(v)
    rows = []
    for (gpu, workflow, resolution, frames), group in groups.items():
        generation = [v.generation_s for v in group if v.generation_s is not None]
        rows.append(
            CostRow(
                gpu_type=gpu,
                workflow=workflow,
                resolution=resolution,
                frames=frames,
                videos=len(group),
                median_generation_s=round(statistics.median(generation), 3) if generation else None,
                median_billed_s=round(statistics.median(v.billed_s for v in group), 3),
                usd_per_video=round(sum(v.cost_usd for v in group) / len(group), 6),
            )
        )
    rows.sort(key=lambda r: (r.workflow, r.resolution, r.frames, r.usd_per_video, r.gpu_type))
    return rows


def read_events(instance: Any, limit: int = HISTORY) -> tuple[list[VideoEvent], list[VideoEvent]]:
    """The newest `limit` materializations and observations of `generated_video`."""

    def fetch(method: Any, attr: str) -> list[VideoEvent]:
        events: list[VideoEvent] = []
        cursor = None
        while len(events) < limit:
            page = method(GENERATED_VIDEO, limit=min(500, limit - len(events)), cursor=cursor)
            for record in page.records:
                event = getattr(record, attr)
                if event is not None and record.partition_key:
                    events.append(VideoEvent(record.run_id, record.partition_key, event.metadata))
            if not page.has_more:
                break
            cursor = page.cursor
        return events

    return (
        fetch(instance.fetch_materializations, "asset_materialization"),
        fetch(instance.fetch_observations, "asset_observation"),
    )


def measured_rows(instance: Any, by_size: bool = True, limit: int = HISTORY) -> list[CostRow]:
    """The cost table of the instance's history."""
    materializations, observations = read_events(instance, limit)
    return cost_rows(samples(materializations, observations), by_size=by_size)
