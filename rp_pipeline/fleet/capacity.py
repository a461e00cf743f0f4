"""Waiting for GPU stock before a run launches (RP_CAPACITY_WAIT_S).

When the catalog shows none of the run's allowed GPU types in stock (where its network volumes
are, and within its per-pod price cap), a run may wait up to RP_CAPACITY_WAIT_S for one, reading
the catalog again with a backoff (1 s, doubling, at most `MAX_POLL_S`), and then launches as
usual. 0 (the default) keeps the old behaviour: no wait, the launch tries the types and fails
at once when none places. The wait ends at once when the run is cancelled: Dagster raises its
interrupt in the sleeping op, and `remembered_interrupts` re-raises one that a sleep swallowed.
When the time is up the run fails in one line; no pod was created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rp_pipeline.fleet.teardown import remembered_interrupts
from rp_pipeline.integrations.runpod.catalog import GpuType, price_refusal, stock_refusal
from rp_pipeline.integrations.runpod.pods import PodSpec
from rp_pipeline.settings import env_name

WAIT_ENV = env_name("capacity_wait_s")
FIRST_POLL_S = 1.0
MAX_POLL_S = 15.0
# A waiting run says what it waits for at most this often (each catalog read is not news).
SAY_EVERY_S = 30.0


class CapacityTimeout(RuntimeError):
    """No allowed GPU type came into stock in time; the message is the run's one line."""


def why_not_placeable(
    catalog: list[GpuType], spec: PodSpec, volumes: dict[str, str]
) -> dict[str, str] | None:
    """None when an allowed type can be placed now (or the catalog gives no stock figures, so
    only a create can tell, or the run names no type); else each allowed type's reason."""
    if not spec.gpu_types:  # an external ComfyUI: no GPU to wait for
        return None
    by_id = {g.id: g for g in catalog}
    reasons: dict[str, str] = {}
    for gpu_id in spec.gpu_types:
        gpu = by_id.get(gpu_id)
        if gpu is None:
            reasons[gpu_id] = "not in the catalog"
            continue
        refusal = stock_refusal(gpu, volumes) or (
            None
            if spec.interruptible
            else price_refusal(spec, gpu.price_for(spec.cloud_type), None)
        )
        if refusal is None:
            return None
        reasons[gpu_id] = refusal
    return reasons


def volume_datacenters(client: Any, spec: PodSpec) -> dict[str, str]:
    """{datacenter: volume id} of the spec's network volumes (empty: no volume)."""
    wanted = spec.network_volume_ids()
    if not wanted:
        return {}
    return {
        str(v.get("dataCenterId") or ""): v["id"]
        for v in client.network_volumes()
        if v.get("id") in wanted
    }


def wait_for_capacity(
    client: Any,
    spec: PodSpec,
    wait_s: float,
    say: Callable[[str], None],
    *,
    clock: Callable[[], float] = time.monotonic,
) -> list[GpuType]:
    """The catalog, once an allowed type is in stock (at once when `wait_s` is 0). Raises
    CapacityTimeout when `wait_s` passes first."""
    catalog: list[GpuType] = client.gpu_types()
    if wait_s <= 0:
        return catalog
    volumes = volume_datacenters(client, spec)
    reasons = why_not_placeable(catalog, spec, volumes)
    if reasons is None:
        return catalog
    started = clock()
    poll_s, said_at = FIRST_POLL_S, started
    say(
        f"no allowed GPU type in stock ({_listed(reasons)}); waiting up to {wait_s:.0f} s "
        f"({WAIT_ENV}) for one, reading the catalog again every {FIRST_POLL_S:.0f}-"
        f"{MAX_POLL_S:.0f} s"
    )
    with remembered_interrupts() as stopped:
        while True:
            left = wait_s - (clock() - started)
            if left <= 0:
                raise CapacityTimeout(
                    f"no allowed GPU type came into stock within "
                    f"{wait_s:.0f} s ({WAIT_ENV}); last seen: {_listed(reasons)}"
                )
            _sleep(min(poll_s, left), stopped)
            poll_s = min(poll_s * 2, MAX_POLL_S)
            catalog = client.gpu_types()
            reasons = why_not_placeable(catalog, spec, volumes)
            if reasons is None:
                say(f"GPU stock is back after {clock() - started:.0f} s of waiting")
                return catalog
            if clock() - said_at >= SAY_EVERY_S:
                said_at = clock()
                say(f"still waiting for GPU stock ({clock() - started:.0f} s of {wait_s:.0f} s)")


def _sleep(seconds: float, stopped: Callable[[], None]) -> None:
    """Sleep in short steps, so a cancel is acted on within a fraction of a second."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        stopped()
        time.sleep(min(0.2, left))
    stopped()


def _listed(reasons: dict[str, str]) -> str:
    return "; ".join(f"{gpu}: {why}" for gpu, why in reasons.items())
