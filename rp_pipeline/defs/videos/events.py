"""What the run's pods report becomes in Dagster: a worker's event turns into a log line, or a
partition's materialization with its check evaluations; the run's end into each partition's
settled cost. Main thread only (the one that talks to Dagster)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetMaterialization,
    AssetObservation,
    DagsterInstance,
)

from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.defs.videos.checks import harvested_video_checks
from rp_pipeline.defs.videos.metadata import (
    agent_metadata,
    preempted_metadata,
    settled_metadata,
    video_metadata,
)
from rp_pipeline.fleet.billing import pod_seconds, settled_costs
from rp_pipeline.fleet.state import BatchState, PodInfo
from rp_pipeline.fleet.work import Event
from rp_pipeline.integrations.r2.resource import R2Resource


def handle_event(
    log: Any, instance: DagsterInstance, state: BatchState, r2: R2Resource, event: Event
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    if event.kind == "log":
        getattr(log, event.level)(event.message)
    elif event.kind == "failed":
        state.failures[event.partition_key] = event.message
        log.error(f"partition {event.partition_key} failed: {event.message}")
    elif event.kind == "video":
        yield from _landed(log, instance, state, r2, event)
    elif event.kind == "pod_end":
        pod = state.pods[event.pod_id]
        if pod.terminated_at is not None:
            billed = pod.terminated_at - pod.launched_at
            log.info(
                f"[pod {pod.pod_id}] done: billed {billed:.1f} s = "
                f"${pod.cost_per_hr * billed / 3600:.4f}"
                + ("" if pod.terminate_confirmed else " (terminate UNCONFIRMED)")
            )


def _landed(
    log: Any, instance: DagsterInstance, state: BatchState, r2: R2Resource, event: Event
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    key, record = event.partition_key, event.record
    assert record is not None
    state.records[key] = record
    state.served_by[key] = event.pod_id
    pod = state.pods[event.pod_id]
    seconds = pod_seconds(state, pod)[key]
    log.info(
        f"[pod {pod.pod_id}] {key}: {record.r2_key} ({record.r2_source}, {record.size_bytes} B)"
    )
    yield AssetMaterialization(
        asset_key=GENERATED_VIDEO,
        partition=key,
        metadata=video_metadata(
            record=record,
            video=state.video(key),
            pod=pod,
            r2=r2,
            pod_seconds=seconds,
            cost_usd=pod.cost_per_hr * seconds / 3600.0,
            batch_size=len(state.videos),
            first_prompt_after_ready_s=first_prompt_after_ready(state, pod),
        )
        | preempted_metadata(state, key)
        | agent_metadata(state, pod.pod_id),
    )
    # The checks are not steps of the run (the ops materialize with events), so the Checks tab
    # gets each video's evaluations from here, right after it lands, judged on what the harvest
    # read (nothing is fetched again). Best effort: the video is in, and a failing check must
    # not fail the harvest of the others.
    try:
        checks = harvested_video_checks(record, state.video(key))
    except Exception as exc:
        log.warning(
            f"{key}: checks not recorded ({type(exc).__name__}: {exc}); run them from the "
            "asset's Checks tab"
        )
        checks = []
    yield from checks


def first_prompt_after_ready(state: BatchState, pod: PodInfo) -> float | None:
    """Seconds (run clock) from the pod answering to the run queueing its first prompt there."""
    times = [sub.submitted_at for sub in state.submitted.values() if sub.pod_id == pod.pod_id]
    if pod.ready_at is None or not times:
        return None
    return max(0.0, min(times) - pod.ready_at)


def settled_observations(state: BatchState, now: float) -> Iterator[AssetObservation]:
    """Each partition's settled cost, once every pod of the run is gone."""
    costs = settled_costs(state, now)
    last_visible: dict[str, float] = {}
    for key, record in state.records.items():
        producer = state.served_by.get(key, "")
        last_visible[producer] = max(last_visible.get(producer, 0.0), record.visible_at)
    for key in state.partition_keys:
        pod_id = state.served_by.get(key)
        yield AssetObservation(
            asset_key=GENERATED_VIDEO,
            partition=key,
            metadata=settled_metadata(
                cost_usd=costs[key],
                pod=state.pods.get(pod_id) if pod_id else None,
                now=now,
                produced=key in state.records,
                pod_last_visible_at=last_visible.get(pod_id or ""),
            ),
        )
