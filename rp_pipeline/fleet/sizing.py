"""How many pods a run gets, and keeping the account under its $/h cap once they exist:
k = min(ceil(N / videos_per_pod), RP_MAX_PODS, pods the cost cap allows)."""

from __future__ import annotations

import math

from rp_pipeline.fleet.external import PodProvider, PodsClient
from rp_pipeline.fleet.launcher import running_cost_per_hr
from rp_pipeline.fleet.run import RunPods
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.integrations.runpod.catalog import GpuType
from rp_pipeline.integrations.runpod.errors import RunPodTransientError


def pods_within_cost_cap(
    client: PodsClient,
    provider: PodProvider,
    catalog: list[GpuType],
    cap: float,
    idle_cost_per_hr: float = 0.0,
) -> tuple[int, float]:
    """(how many more pods fit under the account-wide $/h cap, the spend now). A pod is assumed
    to cost its first GPU type's price; a fallback to a dearer GPU is caught after the create.
    Our idle pods' $/h is room: the run adopts them or ends them to make room. `catalog` is
    the GPU catalog the run already read for its plan (one read per launch)."""
    running = running_cost_per_hr(client)
    spend = max(0.0, running - idle_cost_per_hr)
    by_id = {gpu.id: gpu for gpu in catalog}
    prices = [
        price
        for gpu_id in provider.gpu_types
        if gpu_id in by_id and (price := by_id[gpu_id].price_for(provider.cloud_type))
    ]
    price = prices[0] if prices else (provider.max_cost_per_hr or 0.0)
    if price <= 0:
        return (1 if spend < cap else 0), spend
    return max(0, math.floor((cap - spend + 1e-9) / price)), spend


def fleet_size(n_videos: int, settings: GenerationSettings, by_cost: int) -> int:
    """k = min(ceil(N / videos_per_pod), RP_MAX_PODS, pods the cost cap allows)."""
    return max(
        0,
        min(math.ceil(n_videos / max(1, settings.videos_per_pod)), settings.max_live_pods, by_cost),
    )


def over_cap_after_launch(pods: RunPods) -> float | None:
    """After the creates: if GPU fallbacks took spend over the cap, end our newest pods (never
    the last one). Returns the spend left, or None when it could not be read (the fleet was
    sized under the cap before the creates, so it is kept)."""
    state, settings, log = pods.state, pods.settings, pods.log
    try:
        spend = running_cost_per_hr(pods.client)
    except RunPodTransientError:
        log.warning("could not re-check the cost cap after launch: RunPod's API is down")
        return None
    cap = settings.max_total_cost_per_hr
    for pod in reversed(list(state.pods.values())):
        if spend <= cap + 1e-9 or len(state.pods) == 1:
            break
        log.warning(
            f"pod {pod.pod_id} takes spend to ${spend:.2f}/h, over the ${cap:.2f}/h cap; "
            "terminating it"
        )
        pods.end(pod)
        spend -= pod.cost_per_hr
        del state.pods[pod.pod_id]
    return spend
