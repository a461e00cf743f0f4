"""A pod's lease: the R2 object `{prefix}/_rp/leases/{pod id}.json` that says who may use the
pod and until when. The one module that writes and reads it on the pipeline side; the pod's
watcher (`rp_agent.lease`) reads the same object and ends the pod once the time a write granted
(`expires_at - renewed_at`, counted from the object's age on R2's clock, so the two hosts' clocks
never meet) has passed; a body without `renewed_at` grants nothing (the pod ends at once).

The body, JSON, times in epoch seconds:

- a run's lease: `{"pod_id", "run_id", "renewed_at", "expires_at"}`, written right after the pod
  is created and renewed every `lease_s / 3` by `LeaseKeeper` for as long as an op of the run
  holds the pod; deleted when the pod is terminated. If the run's process dies (SIGKILL, OOM, a
  lost machine) nobody renews it: the pod's watcher stops the pod once the lease lapses, and
  the reaper sensor marks such a run failed.
- adopted: the same with `"state": "busy"` and `"adopted_from_run"` (an idle pod a run claimed).
- idle (a warm pod waiting for the next run, see `fleet.warm_pods`): `{"pod_id", "run_id": null,
  "state": "idle", "idle_since", "renewed_at", "expires_at", "needs", "last_run_id"}`.
- evicted (an idle pod ended to make room): `{"pod_id", "run_id", "state": "evicted",
  "expires_at"}`, `expires_at` = the eviction time and no `renewed_at`, so the pod's watcher
  ends it too.

Changes between states are conditional writes (`PutObject` with `IfMatch` = the ETag read), which
R2 applies atomically: of two runs racing for one pod exactly one wins.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from rp_agent.lease import DEFAULT_LEASE_S, granted_seconds, storage_age
from rp_pipeline.integrations.r2.keys import lease_key
from rp_pipeline.integrations.r2.resource import R2Resource

__all__ = ["DEFAULT_LEASE_S"]  # the pod's watcher and the runs count from the same default

log = logging.getLogger(__name__)

IDLE = "idle"
BUSY = "busy"
EVICTED = "evicted"


@dataclass(frozen=True)
class PodNeeds:
    """What a run needs from a pod, as an idle lease records it (`needs`); an idle pod is
    adopted only when it offers exactly this, and holds every LoRA the run asks for."""

    image: str
    gpu_type: str  # the GPU type id the pod runs on, as RunPod spells it
    volume: str | None  # network volume id, None for a pod-local volume
    # The LoRAs the pod fetched at boot (workflows.loras.lora_ids): a pod fetches them only then.
    loras: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": self.image,
            "gpu_type": self.gpu_type,
            "volume": self.volume,
        }
        if self.loras:
            data["loras"] = list(self.loras)
        return data

    @classmethod
    def from_json(cls, raw: Any) -> PodNeeds | None:
        if not isinstance(raw, dict) or not raw.get("image") or not raw.get("gpu_type"):
            return None
        listed = raw.get("loras")
        loras = listed if isinstance(listed, list) else []
        return cls(
            str(raw["image"]),
            str(raw["gpu_type"]),
            raw.get("volume") or None,
            tuple(sorted(str(item) for item in loras)),
        )

    def fits(
        self, image: str, gpu_types: Iterable[str], volume: str | None, loras: Iterable[str] = ()
    ) -> bool:
        return (
            self.image == image
            and self.gpu_type in set(gpu_types)
            and self.volume == (volume or None)
            and set(loras) <= set(self.loras)
        )


# ---------------------------------------------------------------- the bodies


def run_lease(pod_id: str, run_id: str, lease_s: float, now: float) -> dict[str, Any]:
    return {
        "pod_id": pod_id,
        "run_id": run_id,
        "renewed_at": round(now, 3),
        "expires_at": round(now + lease_s, 3),
    }


def adopted_lease(
    pod_id: str, run_id: str, lease_s: float, now: float, from_run: str | None
) -> dict[str, Any]:
    return {**run_lease(pod_id, run_id, lease_s, now), "state": BUSY, "adopted_from_run": from_run}


def idle_lease(
    pod_id: str, last_run_id: str, needs: PodNeeds, idle_s: float, now: float
) -> dict[str, Any]:
    return {
        "pod_id": pod_id,
        "run_id": None,
        "state": IDLE,
        "idle_since": now,
        "renewed_at": now,
        "expires_at": now + idle_s,
        "needs": needs.to_json(),
        "last_run_id": last_run_id,
    }


def evicted_lease(pod_id: str, run_id: str, now: float) -> dict[str, Any]:
    return {"pod_id": pod_id, "run_id": run_id, "state": EVICTED, "expires_at": now}


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True).encode()


def lease_body(pod_id: str, run_id: str, lease_s: float, now: float | None = None) -> bytes:
    """A run's lease on `pod_id`, as stored."""
    return encode(run_lease(pod_id, run_id, lease_s, time.time() if now is None else now))


# ---------------------------------------------------------------- reading and writing


@dataclass(frozen=True)
class Lease:
    """A lease object as read from R2, with the ETag a conditional write must match."""

    body: dict[str, Any]
    etag: str
    # How long before the read R2 stored this version (R2's `Date` less its `Last-Modified`,
    # one clock: the storage's); None for a lease not read from R2.
    age_s: float | None = None

    @property
    def granted_s(self) -> float:
        """What the write granted on its writer's clock alone (`expires_at - renewed_at`); 0 for
        a body without `renewed_at` (a release or eviction) or with unusable times."""
        try:
            return granted_seconds(self.body)
        except (KeyError, TypeError, ValueError):
            return 0.0

    @property
    def remaining_s(self) -> float:
        """Seconds the lease had left at the read, on R2's clock: the grant less the object's
        age. Neither the writer's nor the reader's wall clock enters it, so a skewed daemon,
        run or pod can neither end a healthy pod nor spare a dead one."""
        return self.granted_s - (self.age_s or 0.0)

    @property
    def lapsed(self) -> bool:
        return self.remaining_s <= 0.0

    @property
    def idle(self) -> bool:
        return self.body.get("state") == IDLE

    @property
    def expires_at(self) -> float:
        try:
            return float(self.body.get("expires_at") or 0.0)
        except (TypeError, ValueError):
            return 0.0

    @property
    def run_id(self) -> str | None:
        return self.body.get("run_id") or None


def read_lease(r2: R2Resource, pod_id: str) -> Lease | None:
    """The pod's lease and its ETag, or None when there is none (or it is not JSON)."""
    try:
        response = r2.client.get_object(Bucket=r2.bucket, Key=lease_key(pod_id, r2.prefix))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        body = json.loads(response["Body"].read())
    except ValueError:
        log.warning("lease of pod %s is not JSON; ignoring it", pod_id)
        return None
    age_s, _storage_now = storage_age(response)
    return Lease(body=body if isinstance(body, dict) else {}, etag=response["ETag"], age_s=age_s)


def read_leases(r2: R2Resource, pod_ids: Iterable[str]) -> dict[str, Lease]:
    leases = {}
    for pod_id in pod_ids:
        lease = read_lease(r2, pod_id)
        if lease is not None:
            leases[pod_id] = lease
    return leases


def lease_bodies(r2: R2Resource, pod_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """pod id -> lease JSON, the shape `fleet.reaper` takes."""
    return {pod_id: lease.body for pod_id, lease in read_leases(r2, pod_ids).items()}


def put_if_match(r2: R2Resource, pod_id: str, body: dict[str, Any], etag: str) -> str | None:
    """Write `body` as the pod's lease only if the object still has `etag`: the new ETag, or
    None if someone else wrote it first (412) or it vanished (404)."""
    try:
        response = r2.client.put_object(
            Bucket=r2.bucket,
            Key=lease_key(pod_id, r2.prefix),
            Body=encode(body),
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


# ---------------------------------------------------------------- a run keeps its leases


class LeaseKeeper:
    """Renews the leases of a set of pods in the background while an op runs (`with`)."""

    def __init__(
        self, r2: R2Resource, run_id: str, lease_s: float, pod_ids: Iterable[str] = ()
    ) -> None:
        self.r2 = r2
        self.run_id = run_id
        self.lease_s = lease_s
        self._pods: set[str] = set()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for pod_id in pod_ids:
            self.hold(pod_id)

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._renew_loop, name="pod-leases", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Leases are left to lapse, not deleted: the next op of the run renews them at once.
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def hold(self, pod_id: str) -> None:
        """Write the pod's lease now and keep renewing it."""
        with self._lock:
            self._pods.add(pod_id)
        self._write(pod_id)

    def forget(self, pod_id: str) -> None:
        """Stop renewing the pod's lease and leave it in place (the pod is handed on idle);
        waits out a renewal in progress, so none lands after this returns."""
        with self._write_lock, self._lock:
            self._pods.discard(pod_id)

    def release(self, pod_id: str) -> None:
        """Stop renewing and delete the lease (the pod is terminated)."""
        with self._lock:
            self._pods.discard(pod_id)
        try:
            self.r2.client.delete_object(
                Bucket=self.r2.bucket, Key=lease_key(pod_id, self.r2.prefix)
            )
        except Exception as exc:  # it lapses on its own
            log.warning("could not delete the lease of pod %s: %s", pod_id, type(exc).__name__)

    def _write(self, pod_id: str) -> None:
        try:
            self.r2.put_bytes(
                lease_key(pod_id, self.r2.prefix),
                lease_body(pod_id, self.run_id, self.lease_s),
                "application/json",
            )
        except Exception as exc:  # R2 hiccup: the next renewal (lease_s / 3 later) retries
            log.warning("could not renew the lease of pod %s: %s", pod_id, type(exc).__name__)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._write_lock:
                with self._lock:
                    pods = sorted(self._pods)
                for pod_id in pods:
                    self._write(pod_id)
