"""What the emulated RunPod sells: GPU types with their prices, datacenters, stock levels."""

from __future__ import annotations

from dataclasses import dataclass

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
DATACENTERS = ("EU-RO-1", "US-KS-2")
DATACENTER_NAMES = {"EU-RO-1": "Europe Romania 1", "US-KS-2": "US Kansas 2"}


@dataclass(frozen=True)
class GpuOffer:
    id: str
    display_name: str
    memory_gb: int
    secure_price: float

    @property
    def community_price(self) -> float:
        return round(self.secure_price * 0.8, 2)

    @property
    def spot_price(self) -> float:
        return round(self.secure_price * 0.5, 2)


GPU_CATALOG = (
    GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69),
    GpuOffer("NVIDIA RTX A6000", "RTX A6000", 48, 0.79),
    GpuOffer("NVIDIA L40S", "L40S", 48, 0.99),
    GpuOffer("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64),
    GpuOffer("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99),
)


class UnknownGpu(LookupError):
    pass


def gpu_offer(gpu_id: str | None) -> GpuOffer:
    for gpu in GPU_CATALOG:
        if gpu.id == gpu_id:
            return gpu
    raise UnknownGpu(f"Invalid GPU type: {gpu_id!r}")


def on_demand_price(gpu: GpuOffer, cloud: str) -> float:
    return gpu.community_price if cloud == "COMMUNITY" else gpu.secure_price


def stock_status(free: int) -> str | None:
    """GraphQL `lowestPrice.stockStatus` for `free` GPUs left (None: none left)."""
    if free >= 4:
        return "High"
    if free >= 2:
        return "Medium"
    return "Low" if free >= 1 else None


def availability_level(free: int, wanted: int = 1) -> str:
    """REST v2 `AvailabilityLevel` for `free` GPUs left when `wanted` are asked for."""
    if free < wanted:
        return "NONE"
    if free >= 4 * wanted:
        return "HIGH"
    return "MEDIUM" if free >= 2 * wanted else "LOW"
