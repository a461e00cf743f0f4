"""The GPU catalog: GPU types with prices and stock, and which of them (in which datacenter) a
spec may be launched on, best first."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rp_pipeline.integrations.runpod.pods import PodSpec

AVAILABILITY_RANK = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


@dataclass(frozen=True)
class GpuType:
    id: str
    display_name: str
    memory_gb: int | None
    secure_price: float | None
    community_price: float | None
    spot_price: float | None
    stock_status: str | None
    # Catalog stock: NONE / LOW / MEDIUM / HIGH overall and per datacenter id; None and {} when
    # the API does not report it (GraphQL: then a create is tried and capacity errors decide).
    availability: str | None = None
    datacenters: dict[str, str] = field(default_factory=dict)

    def price_for(self, cloud_type: str) -> float | None:
        """On-demand $/hr; for ALL the dearer of the two, since RunPod may pick either."""
        prices = {"SECURE": [self.secure_price], "COMMUNITY": [self.community_price]}.get(
            cloud_type, [self.secure_price, self.community_price]
        )
        known = [p for p in prices if p]
        return max(known) if known else None


def gpu_type_from_record(record: dict[str, Any]) -> GpuType:
    lowest = record.get("lowestPrice") or {}
    datacenters = {d["id"]: d["availability"] for d in record.get("dataCenters") or []}
    return GpuType(
        id=record["id"],
        display_name=record.get("displayName") or record["id"],
        memory_gb=record.get("memoryInGb"),
        secure_price=record.get("securePrice"),
        community_price=record.get("communityPrice"),
        spot_price=record.get("secureSpotPrice") or lowest.get("minimumBidPrice"),
        stock_status=lowest.get("stockStatus") or record.get("availability"),
        availability=record.get("availability"),
        datacenters=datacenters,
    )


def price_refusal(spec: PodSpec, on_demand: float | None, bid: float | None) -> str | None:
    """Why this GPU type must not be launched under the spec's price rules, if it must not."""
    if spec.interruptible and bid is None:
        return "no spot price known; set bid_per_gpu"
    price = bid if spec.interruptible else on_demand
    if spec.max_cost_per_hr is None:
        return None
    if price is None:
        return "price unknown, so max_cost_per_hr cannot be checked"
    if price > spec.max_cost_per_hr:
        return f"${price:.2f}/hr is above max_cost_per_hr ${spec.max_cost_per_hr:.2f}"
    return None


def stock_refusal(gpu: GpuType, volumes: dict[str, str]) -> str | None:
    """Why the catalog says this GPU type cannot be placed now, if it says so."""
    if gpu.availability == "NONE":
        return "no stock (catalog availability NONE)"
    if volumes and gpu.availability is not None:
        stocked = [dc for dc in volumes if gpu.datacenters.get(dc, "NONE") != "NONE"]
        if not stocked:
            return f"no stock in the network volumes' datacenters ({', '.join(volumes)})"
    return None


def placements(gpu: GpuType, volumes: dict[str, str]) -> list[tuple[str | None, str | None]]:
    """(datacenter, volume id) candidates for one GPU type, best stock first."""
    if not volumes:
        return [(None, None)]
    if gpu.availability is None:  # no stock figures: try the volumes in the order given
        return list(volumes.items())
    stocked = [dc for dc in volumes if gpu.datacenters.get(dc, "NONE") != "NONE"]
    stocked.sort(key=lambda dc: AVAILABILITY_RANK.get(gpu.datacenters[dc], 3))
    return [(dc, volumes[dc]) for dc in stocked]
