"""Pods nobody will terminate: their run ended (or is unknown) or they outlived any sane run.

Every pod we launch carries `DAGSTER_RUN_ID` in its env and `dagster-<run id[:8]>` in its name;
pods without them are someone else's and are never touched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterRunStatus

from rp_pipeline.integrations.runpod.client import Pod

log = logging.getLogger(__name__)

IN_PROGRESS = {
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
}


@dataclass(frozen=True)
class Orphan:
    pod_id: str
    run_id: str | None
    reason: str


def find_orphans(
    pods: Iterable[Pod],
    run_status: Callable[[str], DagsterRunStatus | None],
    max_lifetime_s: float,
    now: float | None = None,
    first_seen: dict[str, float] | None = None,
    leases: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Orphan]:
    """Pods to terminate. `first_seen` (pod id -> epoch s, kept by the caller across ticks)
    stands in for the creation time when the API does not report one. `leases` (pod id -> lease
    body from R2, see `rp_pipeline.fleet.leases`): an idle pod is kept until its idle time is over,
    whatever became of the run that used it, and an adopted pod belongs to the lease's run."""
    now = time.time() if now is None else now
    orphans = []
    for pod in pods:
        if not pod.is_ours or pod.is_gone:
            continue
        lease = (leases or {}).get(pod.id) or {}
        if lease.get("state") == "idle":
            if float(lease.get("expires_at") or 0.0) <= now:
                orphans.append(Orphan(pod.id, None, "idle time over"))
            continue
        run_id = lease.get("run_id") or pod.run_id
        status = run_status(run_id) if run_id else None
        created = pod.created_at or (first_seen or {}).get(pod.id)
        if status not in IN_PROGRESS:
            reason = f"run {run_id} is {status.value if status else 'unknown'}"
            orphans.append(Orphan(pod.id, run_id, reason))
        elif created is not None and now - created > max_lifetime_s:
            orphans.append(Orphan(pod.id, run_id, f"older than {max_lifetime_s:.0f} s"))
    return orphans


def lapsed_lease(pod: Pod, lease: dict[str, Any] | None, now: float) -> Orphan | None:
    """An Orphan when the pod's run lease has expired (the run stopped renewing it); a pod
    without a lease is left to the other rules."""
    if not lease or lease.get("state") == "idle":  # idle (warm) pods have their own rule
        return None
    try:
        expires_at = float(lease["expires_at"])
    except (KeyError, TypeError, ValueError):
        return None
    if expires_at >= now:
        return None
    return Orphan(
        pod.id,
        lease.get("run_id") or pod.run_id,
        f"lease expired {now - expires_at:.0f} s ago (run process gone)",
    )


def terminate_pods_of_run(
    client: Any, run_id: str, leases: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Terminate every live pod tagged with `run_id`; the ids terminated. With `leases`, a pod
    the run released (idle) or that another run adopted since is not the run's any more."""
    done = []
    for pod in client.list_pods():
        lease = (leases or {}).get(pod.id) or {}
        if lease.get("state") == "idle" or lease.get("run_id") not in (None, run_id):
            continue
        if pod.run_id == run_id and not pod.is_gone:
            client.terminate(pod.id)
            done.append(pod.id)
    return done
