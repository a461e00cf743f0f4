"""Our live pods with their leases: one pod list and one lease read per pod, from which the caps
(busy vs idle pods and what each group costs), adoption and eviction are all decided."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rp_pipeline.fleet.leases import Lease, PodNeeds, read_leases
from rp_pipeline.integrations.r2.resource import R2Resource

# An idle pod is only claimed while this much of its idle time is left, so the pod-side watcher
# (which polls, and whose clock may differ a little) cannot end it right after the claim.
CLAIM_MARGIN_S = 30.0


@dataclass(frozen=True)
class FleetUsage:
    """Our live pods, split into busy and idle, with what each group costs per hour."""

    busy: int
    idle: int
    busy_cost_per_hr: float
    idle_cost_per_hr: float

    @property
    def pods(self) -> int:
        return self.busy + self.idle

    @property
    def cost_per_hr(self) -> float:
        return self.busy_cost_per_hr + self.idle_cost_per_hr


@dataclass(frozen=True)
class LiveFleet:
    """Our pods RunPod does not show gone, with their leases."""

    pods: list[Any]  # rp_pipeline.integrations.runpod.client.Pod
    leases: dict[str, Lease]

    @classmethod
    def read(cls, client: Any, r2: R2Resource) -> LiveFleet:
        pods = [p for p in client.list_pods() if p.is_ours and not p.is_gone]
        return cls(pods, read_leases(r2, [p.id for p in pods]))

    def usage(self) -> FleetUsage:
        """Busy vs idle (an idle pod past its time bills until it is ended, so it still counts),
        for RP_MAX_PODS and the $/h cap."""
        busy = idle = 0
        busy_cost = idle_cost = 0.0
        for pod in self.pods:
            price = float(pod.cost_per_hr or 0.0)
            if pod.id in self.leases and self.leases[pod.id].idle:
                idle, idle_cost = idle + 1, idle_cost + price
            else:
                busy, busy_cost = busy + 1, busy_cost + price
        return FleetUsage(busy, idle, busy_cost, idle_cost)

    def running_leases(self) -> dict[str, Lease]:
        running = {p.id for p in self.pods if p.desired_status == "RUNNING"}
        return {pod_id: lease for pod_id, lease in self.leases.items() if pod_id in running}

    def adoptable(
        self,
        *,
        image: str,
        gpu_types: Iterable[str],
        volume: str | None,
        loras: Iterable[str] = (),
    ) -> list[tuple[Any, Lease]]:
        """Idle pods that fit these needs and have time left to be claimed, cheapest first,
        each with its lease (whose ETag a claim must match). Nothing is claimed. The time left
        is judged on R2's clock (the grant less the lease object's age), as the pod's watcher
        judges it: a run whose clock is off never claims a pod about to end itself."""
        wanted, wanted_loras = list(gpu_types), list(loras)
        found = []
        for pod in sorted(
            (p for p in self.pods if p.desired_status == "RUNNING"),
            key=lambda p: p.cost_per_hr if p.cost_per_hr is not None else math.inf,
        ):
            lease = self.leases.get(pod.id)
            if lease is None or not lease.idle or lease.remaining_s <= claim_margin_s(lease):
                continue
            needs = PodNeeds.from_json(lease.body.get("needs"))
            if needs is not None and needs.fits(image, wanted, volume, wanted_loras):
                found.append((pod, lease))
        return found


def claim_margin_s(lease: Lease) -> float:
    """How much idle time must be left to claim the pod: CLAIM_MARGIN_S, or a third of the idle
    time the lease granted when that is shorter, so a short idle time is still adoptable for
    two thirds of it (a pod kept idle that no run can adopt would only bill)."""
    granted = lease.granted_s
    if granted <= 0:
        return CLAIM_MARGIN_S
    return min(CLAIM_MARGIN_S, granted / 3)


def fleet_usage(client: Any, r2: R2Resource) -> FleetUsage:
    """Live pods of ours, busy vs idle, for RP_MAX_PODS and the $/h cap."""
    return LiveFleet.read(client, r2).usage()


def expired_idle_pod_ids(leases: Mapping[str, Lease]) -> list[str]:
    """Idle pods whose idle time is over on R2's clock (their watchers end them)."""
    return sorted(pod_id for pod_id, lease in leases.items() if lease.idle and lease.lapsed)
