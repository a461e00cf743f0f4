"""Never pay twice for a video that exists: which partitions of a run still need a GPU.

Whatever starts the run (the schedule, a backfill, a range picked in the UI, a sensor), a
partition is skipped, and the run log says so, when
- an earlier attempt of this run (a retry) or any other run already materialized it (unless the
  run asks for a re-make: tag `rp/remake=true` or config `remake: true`),
- another run started before this one is making it right now,
- a run that died left its video in R2: it is materialized from there (its pod's receipt says
  which object), not generated again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetMaterialization, DagsterInstance, DagsterRunStatus, RunsFilter

from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.defs.videos.metadata import recovered_metadata
from rp_pipeline.defs.videos.retry import materialized_by_ancestors, parent_run_id
from rp_pipeline.fleet.harvest import Located, head_from_receipt, inspect_video
from rp_pipeline.fleet.renders import receipt_for_prefix, render_markers
from rp_pipeline.integrations.r2.reports import landed_at
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS

REMAKE_TAG = "rp/remake"
IN_PROGRESS = [DagsterRunStatus.QUEUED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class Triage:
    """The run's partitions sorted out: what to make, and what is skipped with why."""

    make: list[str]
    skipped: dict[str, list[str]] = field(default_factory=dict)  # why -> partitions

    def skip(self, why: str, keys: list[str], labels: dict[str, str] | None = None) -> None:
        """Skip `keys` for `why`; `labels` add a note per key (e.g. the run that made it)."""
        if keys:
            self.skipped[why] = [f"{k} ({labels[k]})" if labels else k for k in keys]
            self.make = [key for key in self.make if key not in keys]

    def lines(self) -> Iterator[str]:
        for why, keys in self.skipped.items():
            yield f"skipping {len(keys)} partition(s) {why}: {', '.join(keys)}"


def triage(instance: DagsterInstance, run: Any, keys: list[str], remake: bool) -> Triage:
    """Which of `keys` this run must make (recovery from R2 comes after, for those)."""
    out = Triage(make=list(keys))
    retried = materialized_by_ancestors(instance, run, GENERATED_VIDEO)
    out.skip(
        "an earlier attempt materialized",
        [k for k in keys if k in retried],
        {k: f"run {run_id[:8]}" for k, run_id in retried.items()},
    )
    if not remake:
        made = instance.get_materialized_partitions(GENERATED_VIDEO)
        out.skip(
            f"already materialized (a re-make pays again: tag {REMAKE_TAG}=true)",
            [k for k in out.make if k in made],
        )
    busy = being_made_elsewhere(instance, run)
    out.skip("another run started earlier is making", [k for k in out.make if k in busy])
    return out


def run_partitions(run: Any, order: list[str]) -> set[str]:
    """The partitions a run of generated_video covers, from its tags."""
    if run.tags.get("dagster/partition"):
        return {run.tags["dagster/partition"]}
    start, end = run.tags.get(RANGE_START), run.tags.get(RANGE_END)
    if start in order and end in order:
        return set(order[order.index(start) : order.index(end) + 1])
    return set()


def being_made_elsewhere(instance: DagsterInstance, run: Any) -> set[str]:
    """Partitions of in-progress runs started before this one (its own ancestors aside): the
    earliest run keeps a partition, so two runs started together never both make it."""
    mine = instance.get_run_record_by_id(run.run_id)
    if mine is None:
        return set()
    ancestors = set()
    parent = parent_run_id(run)
    while parent and parent not in ancestors:
        ancestors.add(parent)
        ancestor = instance.get_run_by_id(parent)
        parent = parent_run_id(ancestor) if ancestor is not None else None
    order = list(instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS))
    busy: set[str] = set()
    for record in instance.get_run_records(filters=RunsFilter(statuses=IN_PROGRESS)):
        other = record.dagster_run
        if other.run_id == run.run_id or other.run_id in ancestors:
            continue
        selection = other.asset_selection  # empty: the job's own assets
        if selection and GENERATED_VIDEO not in selection:
            continue
        # The storage's row id orders runs by creation (timestamps tie within a second).
        if record.storage_id < mine.storage_id:
            busy |= run_partitions(other, order)
    return busy


def recovered_videos(
    r2: R2Resource, run_id: str, keys: list[str], requests: dict[str, dict[str, Any]]
) -> Iterator[AssetMaterialization]:
    """A materialization for each partition whose video an earlier run left in R2."""
    for key in keys:
        for marker in render_markers(r2, key):
            if marker.run_id == run_id:
                continue
            receipt = receipt_for_prefix(r2, marker.pod_id, marker.filename_prefix)
            if receipt is None:
                continue
            landed = landed_at(r2, marker.pod_id, receipt)
            located = Located(head_from_receipt(receipt), landed, "agent", receipt)
            record = inspect_video(
                r2=r2, located=located, partition_key=key, prompt_id=marker.prompt_id,
                generation_time_s=None, queue_wait_s=None,
            )  # fmt: skip
            yield AssetMaterialization(
                asset_key=GENERATED_VIDEO,
                partition=key,
                metadata=recovered_metadata(record, r2, marker, requests.get(key, {})),
            )
            break
