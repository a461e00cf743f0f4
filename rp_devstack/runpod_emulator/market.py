"""`GpuMarket`: the GPU types on sale now (prices, stand-in speeds) and the free GPUs of each
type per datacenter, with the stock changes still to come.

Stock changes are applied lazily, in time order, whenever stock is looked at or moved, so a
schedule needs no thread and its effect is exact at every read. Not thread-safe by itself:
`EmulatorState` calls it with its lock held.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from rp_devstack.runpod_emulator.catalog import (
    CAPACITY_MESSAGE,
    DATACENTERS,
    GPU_CATALOG,
    GpuOffer,
    gpu_offer,
)
from rp_devstack.runpod_emulator.errors import EmulatorError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StockChange:
    """Free GPUs of one type in one datacenter become `count` at epoch second `at`; with
    `lasts_s`, the count before it comes back that much later (an out-of-stock window)."""

    at: float
    gpu_type_id: str
    datacenter: str
    count: int
    lasts_s: float | None = None


class GpuMarket:
    def __init__(self, stock_per_datacenter: int) -> None:
        self.default_stock = stock_per_datacenter
        self._offers: dict[str, GpuOffer] = {}
        self._stock: dict[tuple[str, str], int] = {}
        self._changes: list[StockChange] = []
        self.reset_offers()
        self.reset_stock()

    # ---------------------------------------------------------------- offers

    def reset_offers(self) -> None:
        self._offers = {g.id: g for g in GPU_CATALOG}

    def offers(self) -> list[GpuOffer]:
        return list(self._offers.values())

    def offer(self, gpu_type_id: str | None) -> GpuOffer:
        """The type on sale, or RunPod's refusal of an unknown one."""
        try:
            return gpu_offer(gpu_type_id, self.offers())
        except LookupError as exc:
            raise EmulatorError(str(exc), field="gpuTypeIds") from None

    def set_offer(
        self, gpu_type_id: str, secure_price: float | None, step_seconds: float | None
    ) -> GpuOffer:
        for name, value in (("secure_price", secure_price), ("step_seconds", step_seconds)):
            if value is not None and not value > 0:
                raise EmulatorError(f"{name} must be a number > 0, got {value}")
        offer = self.offer(gpu_type_id)
        offer = replace(
            offer,
            secure_price=offer.secure_price if secure_price is None else secure_price,
            step_seconds=offer.step_seconds if step_seconds is None else step_seconds,
        )
        self._offers[gpu_type_id] = offer
        return offer

    # ---------------------------------------------------------------- stock

    def reset_stock(self) -> None:
        self._changes.clear()
        self._stock = {(g.id, dc): self.default_stock for g in GPU_CATALOG for dc in DATACENTERS}

    def schedule(
        self,
        gpu_type_id: str,
        count: int,
        datacenter: str | None,
        seconds: float | None,
        after_s: float | None,
    ) -> None:
        """See `EmulatorState.set_stock`."""
        if count < 0:
            raise EmulatorError(f"count must be >= 0, got {count}")
        for name, value in (("seconds", seconds), ("after_s", after_s)):
            if value is not None and not value >= 0:
                raise EmulatorError(f"{name} must be a number >= 0, got {value}")
        self.offer(gpu_type_id)  # refuses an unknown type
        if datacenter is not None and datacenter not in DATACENTERS:
            raise EmulatorError(
                f"unknown datacenter {datacenter!r}; use one of {', '.join(DATACENTERS)}"
            )
        at = time.time() + (after_s or 0.0)
        for dc in [datacenter] if datacenter else DATACENTERS:
            self._add(StockChange(at, gpu_type_id, dc, count, seconds))
        self._apply_due()

    def free(self, gpu_type_id: str, datacenter: str) -> int:
        self._apply_due()
        return self._stock.get((gpu_type_id, datacenter), 0)

    def scheduled(self) -> list[StockChange]:
        """Stock changes still to come, soonest first."""
        self._apply_due()
        return list(self._changes)

    def take(self, gpu_type_id: str, count: int, datacenters: list[str]) -> str:
        """Rent `count` GPUs in the preferred datacenter with the most free (any if none is
        preferred); RunPod's capacity refusal when even that one has too few."""
        self._apply_due()
        candidates = datacenters or list(DATACENTERS)
        best = max(candidates, key=lambda dc: self._stock.get((gpu_type_id, dc), 0))
        if self._stock.get((gpu_type_id, best), 0) < count:
            # REST v2 answers capacity exhaustion with a 400 and a human-readable detail only.
            raise EmulatorError(CAPACITY_MESSAGE, status=400)
        self._stock[(gpu_type_id, best)] -= count
        return best

    def give_back(self, gpu_type_id: str, datacenter: str, count: int) -> None:
        self._apply_due()
        self._stock[(gpu_type_id, datacenter)] += count

    def view(self) -> list[dict[str, Any]]:
        """Per type: prices, stand-in speed, free GPUs per datacenter, changes to come."""
        self._apply_due()
        now = time.time()
        return [
            {
                "id": g.id,
                "name": g.display_name,
                "secure_price": g.secure_price,
                "community_price": g.community_price,
                "spot_price": g.spot_price,
                "step_seconds": g.step_seconds,
                "free": {dc: self._stock.get((g.id, dc), 0) for dc in DATACENTERS},
                "scheduled": [
                    {
                        "in_s": round(c.at - now, 3),
                        "datacenter": c.datacenter,
                        "count": c.count,
                        "lasts_s": c.lasts_s,
                    }
                    for c in self._changes
                    if c.gpu_type_id == g.id
                ],
            }
            for g in self._offers.values()
        ]

    def _add(self, change: StockChange) -> None:
        self._changes.append(change)
        self._changes.sort(key=lambda c: c.at)  # stable: same-time changes keep their order

    def _apply_due(self) -> None:
        now = time.time()
        while self._changes and self._changes[0].at <= now:
            change = self._changes.pop(0)
            key = (change.gpu_type_id, change.datacenter)
            before = self._stock.get(key, 0)
            self._stock[key] = change.count
            log.info("stock of %s in %s: %d free", key[0], key[1], change.count)
            if change.lasts_s is not None:
                self._add(StockChange(change.at + change.lasts_s, key[0], key[1], before))
