"""Pod slots that cannot leak: when a run finds no free slot, the slots are checked against
RunPod's list of live pods. A slot whose run has no live pod is freed when the run has ended
(its terminate went unconfirmed, e.g. with a revoked key, and the pod ended itself since), or
when the run is still marked in progress but has written nothing for two lease times: its
process died, so it is marked failed too. Each is said in the run's log."""

from __future__ import annotations

import time
from typing import Any

from dagster import DagsterInstance

from rp_pipeline.fleet.external import PodsClient
from rp_pipeline.fleet.slots import POD_POOL, PodSlots
from rp_pipeline.fleet.sweep import run_name_prefix
from rp_pipeline.integrations.dagster_internals import PoolStorage


def has_live_pod(run_id: str, live_pods: list[Any]) -> bool:
    """RunPod shows a pod of the run not gone (tagged with the run, or named for it)."""
    prefix = run_name_prefix(run_id)
    return any(pod.run_id == run_id or pod.name.startswith(prefix) for pod in live_pods)


def last_event_age_s(instance: DagsterInstance, run_id: str) -> float | None:
    records = instance.get_records_for_run(run_id, limit=1, ascending=False).records
    if not records:
        return None
    return time.time() - records[0].event_log_entry.timestamp


def free_slots_of_gone_pods(
    slots: PodSlots, instance: DagsterInstance, client: PodsClient, lease_s: float, log: Any
) -> list[str]:
    """Free the slots of other runs that no live pod backs; returns those runs' ids."""
    others = {run: keys for run, keys in slots.holders().items() if run != slots.run_id}
    return free_unbacked_slots(others, instance, client, lease_s, log)


def audit_pod_slots(
    instance: DagsterInstance, client: PodsClient, lease_s: float, log: Any
) -> list[str]:
    """The same for every holder of a slot, from the reaper's tick: a run whose process died
    after its pod had already ended itself (no tick saw the pod alive) is failed and freed
    without waiting for another run to want its slot."""
    holders = PoolStorage(instance).holders(POD_POOL)
    return free_unbacked_slots(holders, instance, client, lease_s, log)


def free_unbacked_slots(
    holders: dict[str, list[str]],
    instance: DagsterInstance,
    client: PodsClient,
    lease_s: float,
    log: Any,
) -> list[str]:
    if not holders:
        return []
    others = holders
    live_pods = [pod for pod in client.list_pods() if not pod.is_gone]
    freed = []
    for run_id, keys in others.items():
        if has_live_pod(run_id, live_pods):
            continue
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            age = last_event_age_s(instance, run_id)
            if age is None or age < 2 * lease_s:
                continue  # launching, or between pods: alive
            instance.report_run_failed(
                run,
                f"its pods are gone and it wrote nothing for {age:.0f} s (lease {lease_s:.0f} s): "
                "its process died",
            )
            log.warning(f"run {run_id[:8]} had no live pod and no sign of life: marked failed")
        PoolStorage(instance).free_run(run_id)
        freed.append(run_id)
        log.warning(
            f"freed {len(keys)} pod slot(s) of run {run_id[:8]}: RunPod lists no live pod of it"
        )
    return freed
