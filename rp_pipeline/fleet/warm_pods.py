"""Warm pods: a pod whose work is done may wait, idle, for the next run instead of terminating.

Everything lives in RunPod's pod list and the pod's lease object in R2
(`rp_agent.keys.lease_key`), so any process of any Dagster instance can find and adopt an idle
pod, and nothing on our side has to stay up to end it:

- release: the run rewrites the lease as idle, `{"pod_id", "run_id": null, "state": "idle",
  "idle_since", "expires_at": now + idle_s, "needs": {image, gpu_type, volume}, "last_run_id"}`.
  The pod-side lease watcher ends the pod once `expires_at` has passed, as for a busy lease.
- adopt: list our pods, read their leases, pick an idle one whose needs fit, and claim it with a
  conditional write (`PutObject` with `IfMatch` = the ETag read). R2 applies it atomically, so
  of two runs racing for one pod exactly one wins; the loser gets 412 and tries the next pod.
- idle pods still bill: they count against the pod and cost caps (`fleet_usage`), the reaper ends
  the expired ones (`expired_idle_pod_ids`), and the run that adopts a pod is billed for the idle
  time it took over, shown apart from busy time (`split_billed_seconds`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent.keys import DEFAULT_PREFIX, lease_key
from rp_pipeline.settings import (
    DEFAULT_IDLE_S,
    SettingError,
    current,
    r2_from_environment,
    r2_prefix,
)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_IDLE_S"]
# An idle pod is only claimed while this much of its idle time is left, so the pod-side watcher
# (which polls, and whose clock may differ a little) cannot end it right after the claim.
CLAIM_MARGIN_S = 30.0


class WarmPodConfigError(ValueError):
    """A bad warm-pod setting; the message is one line that says what to change."""


def idle_seconds_from_env(env: Mapping[str, str] | None = None) -> float:
    """RP_POD_IDLE_S as seconds >= 0 (DEFAULT_IDLE_S when unset or empty)."""
    try:
        value: float = current("pod_idle_s", env)
    except SettingError as exc:
        raise WarmPodConfigError(str(exc)) from None
    return value


@dataclass(frozen=True)
class PodNeeds:
    """What a run needs from a pod; an idle pod is adopted only when it offers exactly this."""

    image: str
    gpu_type: str  # the GPU type id the pod runs on, as RunPod spells it
    volume: str | None  # network volume id, None for a pod-local volume

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "gpu_type": self.gpu_type, "volume": self.volume}

    @classmethod
    def from_json(cls, raw: Any) -> PodNeeds | None:
        if not isinstance(raw, dict) or not raw.get("image") or not raw.get("gpu_type"):
            return None
        return cls(str(raw["image"]), str(raw["gpu_type"]), raw.get("volume") or None)

    def fits(self, image: str, gpu_types: Iterable[str], volume: str | None) -> bool:
        return (
            self.image == image
            and self.gpu_type in set(gpu_types)
            and self.volume == (volume or None)
        )


def needs_of(client: Any, pod: Any, image: str, volume: str | None) -> PodNeeds:
    """The needs an idle lease records for `pod`: RunPod reports a pod's GPU by display name
    ("RTX 4090"), runs ask by type id ("NVIDIA GeForce RTX 4090"), so map it through the catalog."""
    ids = {g.display_name: g.id for g in client.gpu_types()}
    gpu = str(pod.gpu_type or "")
    return PodNeeds(image, ids.get(gpu, gpu), volume or None)


@dataclass(frozen=True)
class Lease:
    """A lease object as read from R2, with the ETag a conditional write must match."""

    body: dict[str, Any]
    etag: str

    @property
    def idle(self) -> bool:
        return self.body.get("state") == "idle"

    @property
    def expires_at(self) -> float:
        try:
            return float(self.body.get("expires_at") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    @property
    def run_id(self) -> str | None:
        return self.body.get("run_id") or None

    def expired(self, now: float) -> bool:
        return self.expires_at <= now


@dataclass(frozen=True)
class Claim:
    """An idle pod this run now holds: `idle_s` is the idle time it took over (and pays for)."""

    pod: Any  # rp_pipeline.integrations.runpod.client.Pod
    claimed_at: float
    idle_s: float
    previous_run_id: str | None
    lease_etag: str


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


# ---------------------------------------------------------------- lease objects


def read_lease(s3: Any, bucket: str, pod_id: str, prefix: str = DEFAULT_PREFIX) -> Lease | None:
    """The pod's lease and its ETag, or None when there is none (or it is not JSON)."""
    try:
        response = s3.get_object(Bucket=bucket, Key=lease_key(pod_id, prefix))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        body = json.loads(response["Body"].read())
    except ValueError:
        log.warning("lease of pod %s is not JSON; ignoring it", pod_id)
        return None
    return Lease(body=body if isinstance(body, dict) else {}, etag=response["ETag"])


def read_leases(
    s3: Any, bucket: str, pod_ids: Iterable[str], prefix: str = DEFAULT_PREFIX
) -> dict[str, Lease]:
    leases = {}
    for pod_id in pod_ids:
        lease = read_lease(s3, bucket, pod_id, prefix)
        if lease is not None:
            leases[pod_id] = lease
    return leases


def lease_bodies(
    s3: Any, bucket: str, pod_ids: Iterable[str], prefix: str = DEFAULT_PREFIX
) -> dict[str, dict[str, Any]]:
    """pod id -> lease JSON, the shape `sensors.reaper` takes."""
    return {
        pod_id: lease.body for pod_id, lease in read_leases(s3, bucket, pod_ids, prefix).items()
    }


def _put_if_match(s3: Any, bucket: str, key: str, body: dict[str, Any], etag: str) -> str | None:
    """Write `body` only if the object still has `etag`: the new ETag, or None if someone
    else wrote it first (412) or it vanished (404)."""
    try:
        response = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(body, sort_keys=True).encode(),
            ContentType="application/json",
            IfMatch=etag,
        )
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = exc.response.get("Error", {}).get("Code")
        if status in (404, 409, 412) or code in ("PreconditionFailed", "NoSuchKey"):
            return None
        raise
    return str(response["ETag"])


# ---------------------------------------------------------------- release and adopt


def release_to_idle(
    s3: Any,
    bucket: str,
    pod_id: str,
    run_id: str,
    needs: PodNeeds,
    idle_s: float,
    prefix: str = DEFAULT_PREFIX,
    now: float | None = None,
) -> bool:
    """Turn this run's lease on `pod_id` into an idle lease. False means: terminate the pod now
    (idle_s is 0, the lease is gone or no longer this run's, or it changed under us). Stop
    renewing the lease before calling this, or a late renewal makes the release fail."""
    if idle_s <= 0:
        return False
    now = time.time() if now is None else now
    lease = read_lease(s3, bucket, pod_id, prefix)
    if lease is None or lease.idle or lease.run_id != run_id:
        log.info("pod %s: lease is not this run's; not keeping the pod warm", pod_id)
        return False
    body = {
        "pod_id": pod_id,
        "run_id": None,
        "state": "idle",
        "idle_since": now,
        "renewed_at": now,
        "expires_at": now + idle_s,
        "needs": needs.to_json(),
        "last_run_id": run_id,
    }
    if _put_if_match(s3, bucket, lease_key(pod_id, prefix), body, lease.etag) is None:
        log.info("pod %s: lease changed while releasing it; not keeping the pod warm", pod_id)
        return False
    log.info("pod %s idle for up to %.0f s, for the next run to adopt", pod_id, idle_s)
    return True


def claim_idle_pod(
    client: Any,
    s3: Any,
    bucket: str,
    run_id: str,
    *,
    image: str,
    gpu_types: Iterable[str],
    volume: str | None,
    lease_s: float,
    prefix: str = DEFAULT_PREFIX,
    now: float | None = None,
) -> Claim | None:
    """Adopt an idle pod that fits (cheapest first), or None when none is free. The claim is
    this run's lease (`lease_s` long, renew it as usual); then check readiness as for a new pod."""
    now = time.time() if now is None else now
    fleet = LiveFleet.read(client, s3, bucket, prefix)
    for pod, lease in fleet.adoptable(image=image, gpu_types=gpu_types, volume=volume, now=now):
        idle_since = float(lease.body.get("idle_since") or now)
        body = {
            "pod_id": pod.id,
            "run_id": run_id,
            "state": "busy",
            "renewed_at": now,
            "expires_at": now + lease_s,
            "adopted_from_run": lease.body.get("last_run_id"),
        }
        etag = _put_if_match(s3, bucket, lease_key(pod.id, prefix), body, lease.etag)
        if etag is None:
            log.info("pod %s was claimed by another run first; trying the next", pod.id)
            continue
        idle = max(0.0, now - idle_since)
        log.info("run %s adopted warm pod %s (idle %.0f s)", run_id, pod.id, idle)
        return Claim(pod, now, idle, lease.body.get("last_run_id"), etag)
    return None


def evict_idle_pod(
    client: Any, s3: Any, bucket: str, run_id: str, prefix: str = DEFAULT_PREFIX
) -> str | None:
    """End one idle pod to make room under RP_MAX_PODS when none of them fits this run: the one
    closest to its end first. It is claimed with the same conditional write before it is ended,
    so no other run adopts it meanwhile; the id ended, or None when there was no idle pod."""
    now = time.time()
    leases = LiveFleet.read(client, s3, bucket, prefix).running_leases()
    for _, pod_id in sorted((lease.expires_at, i) for i, lease in leases.items() if lease.idle):
        # expires_at = now: should our terminate fail, the pod's own watcher ends it.
        body = {"pod_id": pod_id, "run_id": run_id, "state": "evicted", "expires_at": now}
        if _put_if_match(s3, bucket, lease_key(pod_id, prefix), body, leases[pod_id].etag):
            log.info("run %s ends idle pod %s to make room for a pod that fits", run_id, pod_id)
            client.terminate(pod_id)
            return pod_id
    return None


# ---------------------------------------------------------------- counting and reaping


@dataclass(frozen=True)
class LiveFleet:
    """Our pods RunPod does not show gone, with their leases: one pod list and one lease read
    per pod, from which usage, adoption and eviction are all decided."""

    pods: list[Any]  # rp_pipeline.integrations.runpod.client.Pod
    leases: dict[str, Lease]

    @classmethod
    def read(cls, client: Any, s3: Any, bucket: str, prefix: str = DEFAULT_PREFIX) -> LiveFleet:
        pods = [p for p in client.list_pods() if p.is_ours and not p.is_gone]
        return cls(pods, read_leases(s3, bucket, [p.id for p in pods], prefix))

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
        self, *, image: str, gpu_types: Iterable[str], volume: str | None, now: float
    ) -> list[tuple[Any, Lease]]:
        """Idle pods that fit these needs and have time left to be claimed, cheapest first,
        each with its lease (whose ETag a claim must match). Nothing is claimed."""
        wanted = list(gpu_types)
        found = []
        for pod in sorted(
            (p for p in self.pods if p.desired_status == "RUNNING"),
            key=lambda p: p.cost_per_hr if p.cost_per_hr is not None else math.inf,
        ):
            lease = self.leases.get(pod.id)
            if lease is None or not lease.idle or lease.expires_at <= now + CLAIM_MARGIN_S:
                continue
            needs = PodNeeds.from_json(lease.body.get("needs"))
            if needs is not None and needs.fits(image, wanted, volume):
                found.append((pod, lease))
        return found


def fleet_usage(
    client: Any, s3: Any, bucket: str, prefix: str = DEFAULT_PREFIX, now: float | None = None
) -> FleetUsage:
    """Live pods of ours, busy vs idle, for RP_MAX_PODS and the $/h cap."""
    return LiveFleet.read(client, s3, bucket, prefix).usage()


def expired_idle_pod_ids(leases: Mapping[str, Lease], now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return sorted(pod_id for pod_id, lease in leases.items() if lease.idle and lease.expired(now))


def idle_pod_ids_from_env(pod_ids: Iterable[str]) -> set[str]:
    """Which of `pod_ids` are idle, when R2 is configured in the env (else none are known)."""
    from rp_agent.r2 import R2ConfigError, make_r2_client

    try:
        settings = r2_from_environment()
    except R2ConfigError:
        return set()
    prefix = r2_prefix()
    try:
        leases = read_leases(make_r2_client(settings), settings.bucket, pod_ids, prefix)
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not read pod leases from R2 (%s); idle pods are not marked", exc)
        return set()
    return {pod_id for pod_id, lease in leases.items() if lease.idle}
