"""Which allowed GPU type a run tries first (RP_GPU_CHOICE), from the measured cost table.

- `preference` (default): RP_GPU_TYPES in the order given.
- `cheapest-per-video`: the types measured for the run's workflow by $/video, cheapest first;
  types never measured after them, cheapest per hour first. With RP_GPU_EXPLORE_VIDEOS=N > 0, a
  type measured on fewer than N videos of the workflow goes first (cheapest per hour first), so
  runs measure it; once it has N videos it takes its measured place.
- `fastest`: measured types by median generation seconds, fastest first, skipping those whose
  $/video is above RP_GPU_MAX_USD_PER_VIDEO; unmeasured types after them in preference order.

The run's workflow is the one most of its videos use; the table's rows of that workflow at the
run's resolution and frame class are used when any GPU type has them, else the workflow's rows
over every size. The order is one list; the launcher tries it in order, skipping types out of
stock, as it does for RP_GPU_TYPES.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rp_pipeline.money.cost_table import CostRow, frame_class, resolution_of
from rp_pipeline.settings import GPU_CHOICES, env_name
from rp_pipeline.workflows import WorkflowError, WorkflowParamError, defaults, get_workflow

CHOICE_ENV = env_name("gpu_choice")
CEILING_ENV = env_name("gpu_max_usd_per_video")

__all__ = ["GPU_CHOICES", "GpuChoiceError", "GpuOrder", "Workload", "order_gpu_types"]


class GpuChoiceError(ValueError):
    """No allowed GPU type meets the choice's rule; one line that says what to change."""


@dataclass(frozen=True)
class Workload:
    """What a run renders, as the cost table keys it."""

    workflow: str
    resolution: str = "?"
    frames: str = "?"
    videos: int = 0
    other_workflows: int = 0  # videos of the run in other workflows (their costs are not used)

    @classmethod
    def of(cls, videos: Sequence[Any]) -> Workload | None:
        """The run's most common (workflow, size) among its planned videos; a size a request
        does not give is the workflow's own (what the video will measure, as the table keys it)."""
        keys = []
        for video in videos:
            params = {
                **_workflow_defaults(video.workflow_name),
                **(video.request.get("params") or {}),
            }
            size = resolution_of(params.get("width"), params.get("height"))
            keys.append((video.workflow_name, size, frame_class(params.get("frames"))))
        if not keys:
            return None
        (workflow, size, frames), count = Counter(keys).most_common(1)[0]
        same = sum(1 for k in keys if k[0] == workflow)
        return cls(workflow, size, frames, count, len(keys) - same)


def _workflow_defaults(name: str) -> dict[str, Any]:
    try:
        return defaults(get_workflow(name))
    except (WorkflowError, WorkflowParamError):
        return {}  # the run's first op has refused it already


@dataclass(frozen=True)
class GpuOrder:
    gpu_types: tuple[str, ...]
    reason: str  # one line for the run log: the choice, the order and the figures behind it


def _rows_for(rows: Iterable[CostRow], workload: Workload) -> tuple[dict[str, CostRow], str]:
    """Per GPU type, the row of the run's workflow at its size if any type has one, else the
    workflow's rows over every size (`rows` then come from `cost_rows(by_size=False)`)."""
    same = [r for r in rows if r.workflow == workload.workflow]
    sized = [r for r in same if (r.resolution, r.frames) == (workload.resolution, workload.frames)]
    if sized and workload.resolution != "?":
        return {r.gpu_type: r for r in sized}, f"{workload.resolution}, {workload.frames} frames"
    return {r.gpu_type: r for r in same if r.resolution == "all"}, "all sizes"


def _figures(row: CostRow) -> str:
    gen = f"{row.median_generation_s:.1f} s" if row.median_generation_s is not None else "? s"
    return f"${row.usd_per_video:.4f}/video, {gen} generation, {row.videos} video(s)"


def order_gpu_types(
    choice: str,
    allowed: Sequence[str],
    rows: Iterable[CostRow],
    prices: dict[str, float | None],
    workload: Workload | None,
    *,
    explore_videos: int = 0,
    max_usd_per_video: float | None = None,
) -> GpuOrder:
    """The allowed types in the order to try them. `rows`: the cost table, by size and over all
    sizes; `prices`: $/h per type (the catalog's, for the run's cloud)."""
    allowed = list(dict.fromkeys(allowed))
    if choice == "preference" or workload is None:
        why = "" if choice == "preference" else " (the run has no videos to measure by)"
        return GpuOrder(tuple(allowed), f"GPU order {', '.join(allowed)}: RP_GPU_TYPES order{why}")
    measured, scope = _rows_for(rows, workload)
    measured = {gpu: row for gpu, row in measured.items() if gpu in allowed}
    per_hour = {gpu: prices.get(gpu) or float("inf") for gpu in allowed}
    unmeasured = [g for g in allowed if g not in measured]
    about = f"workflow {workload.workflow} ({scope})"
    if workload.other_workflows:
        about += f"; {workload.other_workflows} video(s) of other workflows not weighed"
    figures = {g: _figures(row) for g, row in measured.items()}
    figures |= {g: f"not measured, ${per_hour[g]:.2f}/h" for g in unmeasured}
    notes = [f"{g}: {figures[g]}" for g in allowed]
    if choice == "cheapest-per-video":
        explore = sorted(
            (g for g in allowed if explore_videos and (
                g not in measured or measured[g].videos < explore_videos)),
            key=lambda g: per_hour[g],
        )  # fmt: skip
        ranked = sorted(
            (g for g in measured if g not in explore), key=lambda g: measured[g].usd_per_video
        )
        rest = sorted((g for g in unmeasured if g not in explore), key=lambda g: per_hour[g])
        order = explore + ranked + rest
        rule = "cheapest measured $/video first, unmeasured by $/h after"
        if explore:
            rule = (
                f"exploring {', '.join(explore)} (< {explore_videos} videos measured), then " + rule
            )
    elif choice == "fastest":
        over = [
            g
            for g, row in measured.items()
            if max_usd_per_video is not None and row.usd_per_video > max_usd_per_video
        ]
        ranked = sorted(
            (g for g in measured if g not in over),
            key=lambda g: measured[g].median_generation_s or float("inf"),
        )
        order = ranked + unmeasured
        if not order:
            raise GpuChoiceError(
                f"{CHOICE_ENV}=fastest: every allowed GPU type costs more than "
                f"{CEILING_ENV}=${max_usd_per_video:.4f} per video for {about} "
                f"({'; '.join(notes)}); raise the ceiling or allow another type"
            )
        rule = "fastest measured generation first"
        if max_usd_per_video is not None:
            rule += f" under ${max_usd_per_video:.4f}/video"
            if over:
                rule += f" (skipped {', '.join(over)}: dearer)"
        rule += ", unmeasured after"
    else:
        raise GpuChoiceError(f"{CHOICE_ENV} must be one of {', '.join(GPU_CHOICES)}")
    # The figures in the order chosen, then any type left out (over the ceiling).
    notes = [f"{g}: {figures[g]}" for g in [*order, *(g for g in allowed if g not in order)]]
    return GpuOrder(
        tuple(order),
        f"GPU order {', '.join(order)} ({CHOICE_ENV}={choice}: {rule}; {about}: "
        + "; ".join(notes)
        + ")",
    )
