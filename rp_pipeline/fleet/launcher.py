"""Launching and readying single pods of a run (the launch op, and replacements), and the
room a new run has next to the account's running and idle pods."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.live_fleet import LiveFleet, fleet_usage
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.state import PodInfo
from rp_pipeline.fleet.warm_pods import claim_idle_pod, evict_idle_pod
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token
from rp_pipeline.money.market import PodMarket, launch_on_market
from rp_pipeline.workflows.loras import LORAS_ENV, lora_ids

log = logging.getLogger(__name__)


@dataclass
class Launcher:
    """Launches and readies single pods of the run (the launch op, and replacements)."""

    runpod: Any
    settings: GenerationSettings
    run_id: str
    leases: LeaseKeeper
    base_env: dict[str, str]
    batch_size: int
    plan: Any = None  # rp_pipeline.money.plan.RunPlan (None: on-demand, no warm pods)
    budget: Any = None  # rp_pipeline.money.budget.RunBudget, asked before each new pod
    # RP_LORAS for the run's pods (workflows.loras.pod_env_value): the batch's LoRAs, fetched by
    # the pod before ComfyUI starts. "" when the batch has none.
    loras_env: str = ""

    def label(self, slot: str, attempt: int = 0) -> str:
        return f"x{self.batch_size}-{slot}" + (f"-r{attempt}" if attempt else "")

    def launch(self, slot: str, attempt: int = 0) -> PodInfo:
        """Create one pod with a fresh token in its env. The client is the one retry layer: it
        sends at most its `create_attempts` creates for this slot, and adopts the pod when an
        answer was lost but RunPod made it; its error is the one line the op reports."""
        client = self.runpod.get_client()
        market = self.plan.market if self.plan is not None else PodMarket()
        price = self.plan.price if self.plan is not None else 0.0
        if self.budget is not None:  # BudgetExceeded: no pod, the caller says why
            self.budget.check_new_pod(price, boots=False)
        adopted = self._adopt(client, slot)
        if adopted is not None:
            return adopted
        if self.budget is not None:  # a pod of our own must also pay its boot
            self.budget.check_new_pod(price)
        self._make_room(client, price)
        label = self.label(slot, attempt)
        env = {**self.base_env, POD_TOKEN_ENV: new_pod_token()}
        if self.loras_env:
            env[LORAS_ENV] = self.loras_env
        # The plan's GPU order (RP_GPU_CHOICE) is the one place the run's type order is set.
        order = (
            {"gpu_types": list(self.plan.gpu_types)} if self.plan and self.plan.gpu_types else {}
        )
        spec = self.runpod.pod_spec(env=env, name=label, **order)
        launched_at = time.time()
        pod = launch_on_market(client, spec, self.run_id, market)
        info = PodInfo(
            pod_id=pod.id,
            name=pod.name,
            gpu_type=str(pod.gpu_type or ""),
            cost_per_hr=float(pod.cost_per_hr or 0.0),
            launched_at=launched_at,
            slot_key=slot,
            client_id=uuid.uuid4().hex,
            # interruptible-fallback may have rented on-demand; an EXITED on-demand pod is then
            # counted as preempted too, which only adds the flag to its moved prompts.
            interruptible=market.spot,
            loras=lora_ids(self.loras_env),
        )
        self.leases.hold(pod.id)
        return info

    def _adopt(self, client: Any, slot: str) -> PodInfo | None:
        """Claim an idle pod of an earlier run that fits (it skips the boot); the claim is
        this run's lease, which the LeaseKeeper takes over and renews from here. A pod fetches
        LoRAs only at its boot: a run with LoRAs adopts only a pod that holds all of them."""
        r2 = self.leases.r2
        try:
            claim = claim_idle_pod(
                client, r2, self.run_id,
                image=self.runpod.image, gpu_types=self.runpod.gpu_types,
                volume=self.runpod.network_volume_id, lease_s=self.leases.lease_s,
                loras=lora_ids(self.loras_env),
            )  # fmt: skip
        except Exception as exc:  # no adoption is never worse than a cold launch
            log.warning("could not look for an idle pod to adopt (%s); launching one", exc)
            return None
        if claim is None:
            return None
        pod = claim.pod
        self.leases.hold(pod.id)
        return PodInfo(
            pod_id=pod.id,
            name=pod.name,
            gpu_type=str(pod.gpu_type or ""),
            cost_per_hr=float(pod.cost_per_hr or 0.0),
            launched_at=claim.claimed_at - claim.idle_s,
            slot_key=slot,
            client_id=uuid.uuid4().hex,
            interruptible=self.plan is not None and self.plan.market.spot,
            adopted_idle_s=claim.idle_s,
            adopted_from_run=claim.previous_run_id,
            loras=claim.loras,
        )

    def _make_room(self, client: Any, price: float) -> None:
        """Idle pods count against RP_MAX_PODS (they hold no run slot) and the $/h cap: when
        one more pod at `price` would pass either, end an idle one (none of them fits this run,
        or it would have been adopted) so the new pod stays within both."""
        r2 = self.leases.r2
        try:
            usage = fleet_usage(client, r2)
            if not usage.idle:
                return
            cap = self.settings.max_total_cost_per_hr
            over_cost = running_cost_per_hr(client) + price > cap + 1e-9
            if usage.pods >= self.settings.max_live_pods or over_cost:
                evict_idle_pod(client, r2, self.run_id)
        except Exception as exc:
            log.warning("could not count idle pods against RP_MAX_PODS and the cost cap (%s)", exc)

    def ready(self, pod: PodInfo) -> PodInfo:
        client = self.runpod.get_client()
        ready = client.wait_until_ready(
            pod.pod_id,
            port=self.settings.comfyui_port,
            deadline_s=self.settings.ready_deadline_s,
            terminate_on_timeout=True,
        )
        pod.comfyui_url = ready.comfyui_url
        pod.ready_at = time.time()
        return pod


def running_cost_per_hr(client: Any) -> float:
    """What every running pod of the account costs per hour (the $/h cap is account-wide)."""
    return sum(
        float(pod.cost_per_hr or 0)
        for pod in client.list_pods()
        if str(pod.desired_status).upper() == "RUNNING"
    )


@dataclass(frozen=True)
class IdleRoom:
    """Our idle pods, as room for a new run: `fitting` of them it adopts (no boot, no new
    spend), and the launcher ends others when they stand in the way, so their $/h is room too."""

    cost_per_hr: float = 0.0
    fitting: int = 0


def idle_room(client: Any, r2: Any, runpod: Any, loras: tuple[str, ...] = ()) -> IdleRoom:
    """Best effort: no room is counted when R2 cannot be read (the run then sizes as if no
    pod were idle, which is never over a cap). Idle pods that do not fit (another image, GPU,
    volume, or without the run's `loras`) are still room: the launcher may end them."""
    try:
        fleet = LiveFleet.read(client, r2)
        usage = fleet.usage()
        if not usage.idle:
            return IdleRoom()
        fitting = fleet.adoptable(
            image=runpod.image,
            gpu_types=runpod.gpu_types,
            volume=runpod.network_volume_id,
            loras=loras,
        )
    except Exception as exc:
        log.warning("could not read idle pods' leases (%s); sizing without them", exc)
        return IdleRoom()
    return IdleRoom(usage.idle_cost_per_hr, len(fitting))
