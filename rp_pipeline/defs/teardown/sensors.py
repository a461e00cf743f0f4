"""Sensors that make pod teardown independent of any single op running to completion."""

import json
import time
from collections.abc import Callable, Mapping

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from rp_pipeline.fleet.leases import IDLE, Lease, read_leases
from rp_pipeline.fleet.reaper import (
    IN_PROGRESS,
    find_orphans,
    lapsed_lease,
    terminate_pods_of_run,
)
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.slot_audit import audit_pod_slots
from rp_pipeline.fleet.slots import free_run_slots
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import RunPodResource

# A tick must end within Dagster's sensor timeout (60 s), RunPod outage or not.
SENSOR_READ_PATIENCE_S = 10.0

# The daemon's wall clock: it only ages pods by their first sighting (the lifetime cap). Leases
# are judged on R2's clock (fleet.reaper), so a daemon whose clock is off decides the same.
# Tests put a skewed clock here.
wall_clock: Callable[[], float] = time.time


def _run_status(context: SensorEvaluationContext):
    def status(run_id: str):
        run = context.instance.get_run_by_id(run_id)
        return run.status if run else None

    return status


@sensor(minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def pod_reaper(
    context: SensorEvaluationContext,
    runpod: RunPodResource,
    settings: GenerationSettings,
    r2: R2Resource,
):
    """Every minute: terminate pods whose Dagster run is over or unknown, pods older than
    `max_pod_lifetime_s` (env RP_POD_MAX_LIFETIME_S), warm pods whose idle time is
    over, and pods whose run stopped renewing its lease (its process died): such a run is marked
    failed and its pod slots freed."""
    client = runpod.get_client().with_read_patience(SENSOR_READ_PATIENCE_S)
    lifetime = settings.max_pod_lifetime_s
    now = wall_clock()
    pods = [p for p in client.list_pods() if p.is_ours and not p.is_gone]
    # The cursor remembers when each live pod was first seen: its age when RunPod gives none.
    seen = json.loads(context.cursor) if context.cursor else {}
    seen = {pod.id: float(seen.get(pod.id, now)) for pod in pods}
    # Leases in R2 tell warm (idle) pods and pods adopted by a later run apart from orphans.
    leases = read_leases(r2, [p.id for p in pods])
    orphans = find_orphans(pods, _run_status(context), lifetime, now, seen, leases)
    orphans += _lapsed_runs(context, leases, pods, {o.pod_id for o in orphans})
    for orphan in orphans:
        context.log.warning(f"reaping pod {orphan.pod_id}: {orphan.reason}")
        client.terminate(orphan.pod_id)
        seen.pop(orphan.pod_id, None)
    context.update_cursor(json.dumps(seen, sort_keys=True))
    # Slots whose run has no live pod: a run killed after its pod ended itself is failed here.
    audit_pod_slots(context.instance, client, settings.pod_lease_s, context.log)
    reaped = {o.pod_id for o in orphans}
    return SkipReason(
        (
            f"reaped {len(orphans)} pod(s): {', '.join(o.pod_id for o in orphans)}"
            if orphans
            else f"no orphaned pods among {len(pods)} live pod(s) of ours"
        )
        + _warm_pods_note(leases, reaped)
    )


def _warm_pods_note(leases: Mapping[str, Lease], reaped: set[str]) -> str:
    """The idle pods kept for the next run, for the tick history in the UI: they bill too."""
    idle = sorted(
        (lease.remaining_s, pod_id)
        for pod_id, lease in leases.items()
        if lease.body.get("state") == IDLE and pod_id not in reaped
    )
    if not idle:
        return ""
    return f"; {len(idle)} idle (warm) pod(s) billing until adopted or ended: " + ", ".join(
        f"{pod_id} (ends in {max(0.0, remaining):.0f} s)" for remaining, pod_id in idle
    )


def _lapsed_runs(
    context: SensorEvaluationContext,
    leases: Mapping[str, Lease],
    pods: list,
    skip: set[str],
) -> list:
    """Pods of in-progress runs whose lease lapsed: the run's process is gone (e.g. SIGKILL),
    so the run is marked failed (it would stay STARTED forever) and its pod slots freed."""
    found = []
    for pod in pods:
        lease = leases.get(pod.id)
        run_id = (lease.run_id if lease else None) or pod.run_id
        if pod.id in skip or not run_id:
            continue
        run = context.instance.get_run_by_id(run_id)
        if run is None or run.status not in IN_PROGRESS:
            continue
        orphan = lapsed_lease(pod, lease)
        if orphan is None:
            continue
        found.append(orphan)
        context.instance.report_run_failed(
            run, f"the run stopped renewing its pod lease ({orphan.reason}); its process is gone"
        )
        free_run_slots(context.instance, run_id)
    return found


@run_failure_sensor(default_status=DefaultSensorStatus.RUNNING)
def terminate_pods_of_failed_run(context: RunFailureSensorContext, runpod: RunPodResource):
    """A failed run's pod is terminated even if the failing op could not do it itself."""
    ids = terminate_pods_of_run(
        runpod.get_client().with_read_patience(SENSOR_READ_PATIENCE_S), context.dagster_run.run_id
    )
    free_run_slots(context.instance, context.dagster_run.run_id)
    if ids:
        context.log.warning(f"terminated pod(s) {ids} of failed run {context.dagster_run.run_id}")


@run_status_sensor(run_status=DagsterRunStatus.CANCELED, default_status=DefaultSensorStatus.RUNNING)
def terminate_pods_of_canceled_run(context: RunStatusSensorContext, runpod: RunPodResource):
    """Same for runs cancelled from the UI (the op's own finally normally got there first)."""
    ids = terminate_pods_of_run(
        runpod.get_client().with_read_patience(SENSOR_READ_PATIENCE_S), context.dagster_run.run_id
    )
    free_run_slots(context.instance, context.dagster_run.run_id)
    if ids:
        context.log.warning(f"terminated pod(s) {ids} of canceled run {context.dagster_run.run_id}")
