"""Pods nobody will terminate: their run ended (or is unknown) or they outlived any sane run.

Every pod we launch carries `DAGSTER_RUN_ID` in its env and `dagster-<run id[:8]>` in its name;
pods without them are someone else's and are never touched.

Whether a lease has lapsed is judged on one clock, R2's: the time the write granted (on its
writer's clock alone) less the object's age at the read (R2's `Date` less its `Last-Modified`),
as the pod's own watcher judges it. The daemon's wall clock never meets the run's `expires_at`:
a daemon minutes off would otherwise end a healthy pod or spare a dead run's. The daemon's clock
only ages pods by its own first sighting of them, for the lifetime cap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterRunStatus

from rp_pipeline.fleet.leases import IDLE, Lease
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
    leases: Mapping[str, Lease] | None = None,
) -> list[Orphan]:
    """Pods to terminate. `first_seen` (pod id -> epoch s, kept by the caller across ticks)
    stands in for the creation time when the API does not report one; `now` (the caller's
    clock) only ages pods for `max_lifetime_s`. `leases` (pod id -> lease read from R2, see
    `rp_pipeline.fleet.leases`): an idle pod is kept until its idle time is over on R2's clock,
    whatever became of the run that used it, and an adopted pod belongs to the lease's run."""
    now = time.time() if now is None else now
    orphans = []
    for pod in pods:
        if not pod.is_ours or pod.is_gone:
            continue
        lease = (leases or {}).get(pod.id)
        body = lease.body if lease is not None else {}
        if lease is not None and body.get("state") == IDLE:
            if lease.lapsed:
                orphans.append(Orphan(pod.id, None, "idle time over"))
            continue
        run_id = body.get("run_id") or pod.run_id
        status = run_status(run_id) if run_id else None
        created = pod.created_at or (first_seen or {}).get(pod.id)
        if status not in IN_PROGRESS:
            reason = f"run {run_id} is {status.value if status else 'unknown'}"
            orphans.append(Orphan(pod.id, run_id, reason))
        elif created is not None and now - created > max_lifetime_s:
            orphans.append(Orphan(pod.id, run_id, f"older than {max_lifetime_s:.0f} s"))
    return orphans


def lapsed_lease(pod: Pod, lease: Lease | None) -> Orphan | None:
    """An Orphan when the pod's run lease has lapsed on R2's clock (the run stopped renewing
    it); a pod without a lease is left to the other rules."""
    if lease is None or lease.body.get("state") == IDLE:  # idle (warm) pods: their own rule
        return None
    if "expires_at" not in lease.body or not lease.lapsed:
        return None
    return Orphan(
        pod.id,
        lease.run_id or pod.run_id,
        f"lease lapsed {-lease.remaining_s:.0f} s ago on R2's clock (run process gone)",
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
