"""What the emulated RunPod sells: GPU types with their prices, datacenters, stock levels, and
how fast each renders on the devstack.

Speed: RunPod publishes no speed per GPU type; a real pod is as fast as its GPU. An emulated pod
runs the ComfyUI stand-in, which sleeps `step_seconds` per sampler step, so each type carries
the stand-in's step time, in proportion to how fast the type samples a WAN 2.2 video (H100 about
twice a 4090, an A6000 about two thirds of one), scaled down to devstack times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rp_devstack.local_pods import ComfyCommand

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
    step_seconds: float  # the stand-in's seconds per sampler step on this type

    @property
    def community_price(self) -> float:
        return round(self.secure_price * 0.8, 2)

    @property
    def spot_price(self) -> float:
        return round(self.secure_price * 0.5, 2)


GPU_CATALOG = (
    GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.02),
    GpuOffer("NVIDIA RTX A6000", "RTX A6000", 48, 0.79, 0.03),
    GpuOffer("NVIDIA L40S", "L40S", 48, 0.99, 0.017),
    GpuOffer("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 0.014),
    GpuOffer("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 0.01),
)
# Read by `local_pods.standin_command`: the stand-in's `--step-seconds`.
STEP_SECONDS_ENV = "COMFY_STANDIN_STEP_SECONDS"


class UnknownGpu(LookupError):
    pass


def gpu_offer(gpu_id: str | None, offers: Sequence[GpuOffer] = GPU_CATALOG) -> GpuOffer:
    for gpu in offers:
        if gpu.id == gpu_id:
            return gpu
    raise UnknownGpu(f"Invalid GPU type: {gpu_id!r}")


def at_gpu_speed(command: ComfyCommand, gpu: GpuOffer) -> ComfyCommand:
    """`command` for a pod on `gpu`: the stand-in steps at the type's speed unless the pod's
    own env sets `COMFY_STANDIN_STEP_SECONDS` (a test that wants a given pace)."""

    def command_on_gpu(
        port: int, output_dir: Path, input_dir: Path, env: dict[str, str]
    ) -> Sequence[str]:
        if not env.get(STEP_SECONDS_ENV):
            env = {**env, STEP_SECONDS_ENV: str(gpu.step_seconds)}
        return command(port, output_dir, input_dir, env)

    return command_on_gpu


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
