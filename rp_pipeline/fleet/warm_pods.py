"""Warm pods: a pod whose work is done may wait, idle, for the next run instead of terminating.

Everything lives in RunPod's pod list and the pod's lease object in R2 (format:
`fleet.leases`), so any process of any Dagster instance can find and adopt an idle pod, and
nothing on our side has to stay up to end it:

- release: the run rewrites its lease as idle (`expires_at` = now + idle_s, with the pod's
  `needs`). The pod-side lease watcher ends the pod once `expires_at` has passed, as for a busy
  lease.
- adopt: list our pods, read their leases (`fleet.live_fleet`), pick an idle one whose needs fit,
  and claim it with a conditional write. R2 applies it atomically, so of two runs racing for one
  pod exactly one wins; the loser gets 412 and tries the next pod.
- idle pods still bill: they count against the pod and cost caps (`live_fleet.fleet_usage`), the
  reaper ends the expired ones, and the run that adopts a pod is billed for the idle time it took
  over, shown apart from busy time (`split_billed_seconds`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_pipeline.fleet.leases import (
    PodNeeds,
    adopted_lease,
    evicted_lease,
    idle_lease,
    put_if_match,
    read_lease,
    read_leases,
)
from rp_pipeline.fleet.live_fleet import LiveFleet
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.settings import (
    DEFAULT_IDLE_S,
    SettingError,
    current,
    r2_from_environment,
    r2_prefix,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_IDLE_S"]


class WarmPodConfigError(ValueError):
    """A bad warm-pod setting; the message is one line that says what to change."""


def idle_seconds_from_env(env: Mapping[str, str] | None = None) -> float:
    """RP_POD_IDLE_S as seconds >= 0 (DEFAULT_IDLE_S when unset or empty)."""
    try:
        value: float = current("pod_idle_s", env)
    except SettingError as exc:
        raise WarmPodConfigError(str(exc)) from None
    return value


def needs_of(
    client: Any, pod: Any, image: str, volume: str | None, loras: tuple[str, ...] = ()
) -> PodNeeds:
    """The needs an idle lease records for `pod`: RunPod reports a pod's GPU by display name
    ("RTX 4090"), runs ask by type id ("NVIDIA GeForce RTX 4090"), so map it through the catalog."""
    ids = {g.display_name: g.id for g in client.gpu_types()}
    gpu = str(pod.gpu_type or "")
    return PodNeeds(image, ids.get(gpu, gpu), volume or None, loras)


@dataclass(frozen=True)
class Claim:
    """An idle pod this run now holds: `idle_s` is the idle time it took over (and pays for)."""

    pod: Any  # rp_pipeline.integrations.runpod.client.Pod
    claimed_at: float
    idle_s: float
    previous_run_id: str | None
    lease_etag: str
    loras: tuple[str, ...] = ()  # the LoRAs the pod holds (fetched at its boot)


@dataclass(frozen=True)
class BilledSplit:
    busy_s: float
    idle_s: float
    cost_per_hr: float

    @property
    def busy_usd(self) -> float:
        return self.cost_per_hr * self.busy_s / 3600.0

    @property
    def idle_usd(self) -> float:
        return self.cost_per_hr * self.idle_s / 3600.0

    def metadata(self) -> dict[str, float]:
        """Plain floats for a materialization's metadata (the cost settlement)."""
        return {
            "pod_busy_s": round(self.busy_s, 3),
            "pod_idle_s": round(self.idle_s, 3),
            "pod_busy_cost_usd": round(self.busy_usd, 6),
            "pod_idle_cost_usd": round(self.idle_usd, 6),
        }


def split_billed_seconds(billed_s: float, idle_s: float, cost_per_hr: float) -> BilledSplit:
    """Split a run's billed pod seconds into busy and idle. For an adopted pod, billed_s is
    (end - claim.claimed_at) + claim.idle_s and idle_s is claim.idle_s; for a pod the run
    launched itself idle_s is 0 (its own warm wait after release is billed to the adopter, or
    is waste shown by the pod's bill when nobody adopts it)."""
    billed = max(0.0, float(billed_s))
    idle = min(max(0.0, float(idle_s)), billed)
    return BilledSplit(busy_s=billed - idle, idle_s=idle, cost_per_hr=float(cost_per_hr))


# ---------------------------------------------------------------- release, adopt, evict


def release_to_idle(
    r2: R2Resource,
    pod_id: str,
    run_id: str,
    needs: PodNeeds,
    idle_s: float,
    now: float | None = None,
) -> bool:
    """Turn this run's lease on `pod_id` into an idle lease. False means: terminate the pod now
    (idle_s is 0, the lease is gone or no longer this run's, or it changed under us). Stop
    renewing the lease before calling this, or a late renewal makes the release fail."""
    if idle_s <= 0:
        return False
    now = time.time() if now is None else now
    lease = read_lease(r2, pod_id)
    if lease is None or lease.idle or lease.run_id != run_id:
        log.info("pod %s: lease is not this run's; not keeping the pod warm", pod_id)
        return False
    if put_if_match(r2, pod_id, idle_lease(pod_id, run_id, needs, idle_s, now), lease.etag) is None:
        log.info("pod %s: lease changed while releasing it; not keeping the pod warm", pod_id)
        return False
    log.info("pod %s idle for up to %.0f s, for the next run to adopt", pod_id, idle_s)
    return True


def claim_idle_pod(
    client: Any,
    r2: R2Resource,
    run_id: str,
    *,
    image: str,
    gpu_types: Iterable[str],
    volume: str | None,
    lease_s: float,
    loras: tuple[str, ...] = (),
    now: float | None = None,
) -> Claim | None:
    """Adopt an idle pod that fits (cheapest first), or None when none is free. The claim is
    this run's lease (`lease_s` long, renew it as usual); then check readiness as for a new pod."""
    now = time.time() if now is None else now
    fleet = LiveFleet.read(client, r2)
    for pod, lease in fleet.adoptable(image=image, gpu_types=gpu_types, volume=volume, loras=loras):
        idle_since = float(lease.body.get("idle_since") or now)
        previous = lease.body.get("last_run_id")
        body = adopted_lease(pod.id, run_id, lease_s, now, previous)
        etag = put_if_match(r2, pod.id, body, lease.etag)
        if etag is None:
            log.info("pod %s was claimed by another run first; trying the next", pod.id)
            continue
        idle = max(0.0, now - idle_since)
        log.info("run %s adopted warm pod %s (idle %.0f s)", run_id, pod.id, idle)
        held = PodNeeds.from_json(lease.body.get("needs"))
        return Claim(pod, now, idle, previous, etag, held.loras if held else ())
    return None


def evict_idle_pod(client: Any, r2: R2Resource, run_id: str) -> str | None:
    """End one idle pod to make room under RP_MAX_PODS when none of them fits this run: the one
    closest to its end first. It is claimed with the same conditional write before it is ended,
    so no other run adopts it meanwhile; the id ended, or None when there was no idle pod."""
    now = time.time()
    leases = LiveFleet.read(client, r2).running_leases()
    for _, pod_id in sorted((lease.expires_at, i) for i, lease in leases.items() if lease.idle):
        # expires_at = now: should our terminate fail, the pod's own watcher ends it.
        if put_if_match(r2, pod_id, evicted_lease(pod_id, run_id, now), leases[pod_id].etag):
            log.info("run %s ends idle pod %s to make room for a pod that fits", run_id, pod_id)
            client.terminate(pod_id)
            return pod_id
    return None


def idle_pod_ids_from_env(pod_ids: Iterable[str]) -> set[str]:
    """Which of `pod_ids` are idle, when R2 is configured in the env (else none are known)."""
    from rp_agent.r2 import R2ConfigError

    try:
        settings = r2_from_environment()
    except R2ConfigError:
        return set()
    prefix = r2_prefix()
    try:
        r2 = R2Resource(
            endpoint=settings.endpoint,
            bucket=settings.bucket,
            access_key_id=settings.access_key_id,
            secret_access_key=settings.secret_access_key,
            prefix=prefix,
        )
        leases = read_leases(r2, pod_ids)
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not read pod leases from R2 (%s); idle pods are not marked", exc)
        return set()
    return {pod_id for pod_id, lease in leases.items() if lease.idle}
