"""Which RunPod market a pod is rented on: on-demand, interruptible (spot), or spot first.

RP_POD_MARKET (default `on-demand`):
- `on-demand`: the pod is ours until we end it, at the on-demand price.
- `interruptible`: spot, at the GPU's current spot price (about half); RunPod may take the GPU back
  at any moment (the pod turns EXITED, its processes killed). Only GraphQL's
  `podRentInterruptable` rents one: REST v2 has no spot option.
- `interruptible-fallback`: spot first; when no requested GPU type has spot capacity at or under
  the bid cap, on-demand.
RP_SPOT_BID_MAX ($/h per GPU, optional): never bid above it; GPU types whose spot price is higher
are skipped. We bid the current spot price, the least RunPod accepts, and pay what we bid.

A preempted pod's unfinished prompts are lost with it: the fleet puts them back in the queue and
they resume on another pod (`was_preempted` says when a spot pod has been taken back).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from rp_pipeline.integrations.runpod.catalog import GpuType
from rp_pipeline.integrations.runpod.client import RunPodClient
from rp_pipeline.integrations.runpod.errors import NoCapacityError
from rp_pipeline.integrations.runpod.pods import Pod, PodSpec
from rp_pipeline.settings import DEFAULT_MARKET, MARKETS, SettingError, current, env_name

log = logging.getLogger(__name__)

MARKET_ENV = env_name("pod_market")
BID_ENV = env_name("spot_bid_max")
__all__ = ["DEFAULT_MARKET", "MARKETS"]


class MarketConfigError(ValueError):
    """A bad market setting; the message is one line that says what to change."""


@dataclass(frozen=True)
class PodMarket:
    kind: str = DEFAULT_MARKET
    bid_max: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PodMarket:
        """The market as set now (`env`: this mapping instead of the process's)."""
        try:
            return cls(current("pod_market", env), current("spot_bid_max", env))
        except SettingError as exc:
            raise MarketConfigError(str(exc)) from None

    @property
    def spot(self) -> bool:
        return self.kind != "on-demand"

    def specs(self, spec: PodSpec) -> list[PodSpec]:
        """The specs to try, in order: spot (capped at the bid), then on-demand if allowed."""
        on_demand = replace(spec, interruptible=False, bid_per_gpu=None)
        if not self.spot:
            return [on_demand]
        caps = [c for c in (spec.max_cost_per_hr, self.bid_max) if c is not None]
        spot = replace(
            spec, interruptible=True, bid_per_gpu=None, max_cost_per_hr=min(caps) if caps else None
        )
        return [spot, on_demand] if self.kind == "interruptible-fallback" else [spot]

    def worst_price(
        self, catalog: Iterable[GpuType], gpu_types: Iterable[str], cloud_type: str = "ALL"
    ) -> float | None:
        """The most a pod of this run may cost per hour (for the budget's estimate): the dearest
        requested GPU type's price on the dearest market this setting may rent on."""
        by_id = {g.id: g for g in catalog}
        prices = []
        for gpu in (by_id[g] for g in gpu_types if g in by_id):
            if self.kind == "interruptible":
                if gpu.spot_price is not None and gpu.spot_price <= (self.bid_max or math.inf):
                    prices.append(gpu.spot_price)
            elif (price := gpu.price_for(cloud_type)) is not None:
                prices.append(price)
        return max(prices, default=None)

    def check(self, catalog: Iterable[GpuType], gpu_types: Iterable[str]) -> None:
        """Refuse, before any launch, a spot-only market no requested GPU type can meet."""
        if self.kind != "interruptible":
            return
        prices = {g.id: g.spot_price for g in catalog}
        offers = sorted((p, g) for g in gpu_types if (p := prices.get(g)) is not None)
        if not offers:
            raise MarketConfigError(
                f"{MARKET_ENV}=interruptible but none of the requested GPU types has a spot "
                f"price; use {MARKET_ENV}=interruptible-fallback or on-demand"
            )
        cheapest, gpu = offers[0]
        if self.bid_max is not None and cheapest > self.bid_max:
            raise MarketConfigError(
                f"{BID_ENV} ${self.bid_max:.2f}/h is below the spot price of every requested GPU "
                f"type (cheapest: {gpu} at ${cheapest:.2f}/h); raise it or set "
                f"{MARKET_ENV}=interruptible-fallback"
            )


def launch_on_market(client: RunPodClient, spec: PodSpec, run_id: str, market: PodMarket) -> Pod:
    """Launch on the market's first option that has capacity; the last refusal if none has.
    Returns the pod; `pod.cost_per_hr` is what it bills (the bid, for spot). Only a refusal for
    capacity moves on to the next option; any other error (the client's retries spent) is
    raised as it is, so the creates stay within the client's `create_attempts`."""
    last: NoCapacityError | None = None
    for attempt in market.specs(spec):
        try:
            return client.launch(attempt, run_id)
        except NoCapacityError as exc:
            last = exc
            if attempt.interruptible and market.kind == "interruptible-fallback":
                log.info("no spot capacity within the bid (%s); renting on-demand", exc)
    assert last is not None
    raise last


def was_preempted(client: RunPodClient, pod_id: str, interruptible: bool) -> bool:
    """True when an interruptible pod of ours shows EXITED: RunPod took its GPU back (a pod we
    end ourselves is gone or TERMINATED, and RunPod never preempts an on-demand pod). A spot
    container that died on its own looks the same; either way its prompts must run elsewhere."""
    if not interruptible:
        return False
    pod: Any = client.get(pod_id)
    return pod is not None and pod.desired_status == "EXITED"
