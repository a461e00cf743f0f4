"""`rp-agent lease-watch`: the pod stops itself once the run that uses it stops renewing its lease.

A run whose process died (killed host, OOM, lost daemon) cannot terminate its pod, and where no
Dagster daemon runs nothing else would. So the pod holds a lease: the run writes the R2 object
`{prefix}/_rp/leases/{pod id}.json` = {"pod_id", "run_id", "renewed_at", "expires_at"} (epoch
seconds) and renews it while it is alive; this watcher reads it every few seconds and, once the
lease has lapsed, ends the pod through RunPod's API with the pod's own id and key (as SkyPilot's
autostop runs on the machine it stops).

One clock: the run's time stamps are never compared with the pod's clock (a container may boot
minutes off, and either way a wrong clock would end a healthy pod or keep a dead run's pod).
What the watcher takes from the object is a duration on the run's clock, the time the run
granted at that write: `expires_at - renewed_at` (0 for a body without `renewed_at`: a release).
When that write happened it learns from R2's clock alone: the object's age is the response's
`Date` minus its `Last-Modified` (both R2's, whole seconds, so less one second: never older
than it is). It places the write on its own monotonic clock (now minus the age) and the lease
lapses once the granted time has passed there.

Rules:
- Before the first lease object exists the lease counts from the watcher's start (the pod's
  boot): `RP_POD_LEASE_S` seconds (default 300).
- The latest object version read decides, even when it grants less than before (a run may
  release its pod that way). A deleted object leaves the last known deadline in force.
- An R2 outage must not kill a pod whose run is alive: while the object cannot be read, the
  deadline is not enforced until R2 has been unreadable for `RP_POD_LEASE_OUTAGE_S` (default
  1800 s). A pod whose run died during an R2 outage is thus ended at most that much later.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent.clock import wall as pod_wall_clock
from rp_agent.keys import lease_key
from rp_agent.pod_api import PodApiError, PodIdentity, terminate_self

log = logging.getLogger("rp_agent.lease")

LEASE_ENV = "RP_POD_LEASE_S"
OUTAGE_ENV = "RP_POD_LEASE_OUTAGE_S"
POLL_ENV = "RP_POD_LEASE_POLL_S"
DEFAULT_LEASE_S = 300.0
DEFAULT_OUTAGE_S = 1800.0
DEFAULT_POLL_S = 10.0
MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# The pod's clock this far from R2's is worth a warning in the pod's log (it decides nothing).
SKEW_WARNING_S = 30.0


class LeaseUnreadable(Exception):
    """R2 did not answer with the object or a clean 'not found'."""


@dataclass(frozen=True)
class LeaseVersion:
    """One version of the lease object, as the watcher measured it."""

    version: str  # ETag + Last-Modified: a new write, even of identical bytes, is a new version
    granted_s: float  # expires_at - renewed_at: how long the run let the pod live from that write
    age_s: float  # how long before the read R2 stored it (R2's Date - Last-Modified)
    run_id: str | None
    storage_now: float | None  # R2's Date (epoch s), for the skew diagnostic only


def granted_seconds(lease: dict[str, Any]) -> float:
    """The run's grant at that write, on the run's clock alone; never negative."""
    expires_at = float(lease["expires_at"])
    renewed_at = lease.get("renewed_at")
    if renewed_at is None:
        return 0.0  # a body with only `expires_at` (eviction) releases the pod
    return max(0.0, expires_at - float(renewed_at))


def storage_age(response: dict[str, Any]) -> tuple[float, float | None]:
    """(age of the object on R2's clock, R2's Date); age 0 without a usable Date header."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    modified = response.get("LastModified")
    try:
        storage_now = parsedate_to_datetime(headers["date"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0, None
    if modified is None:
        return 0.0, storage_now
    # Both stamps are whole seconds, so their difference can exceed the true age by up to 1 s;
    # taking 1 s off never makes a lease look older than it is (the pod never ends early, at
    # worst a second or two late).
    return max(0.0, storage_now - modified.timestamp() - 1.0), storage_now


@dataclass
class LeaseWatcher:
    s3: Any  # a boto3 S3 client from rp_agent.r2.make_r2_client
    bucket: str
    prefix: str
    pod: PodIdentity
    lease_s: float = DEFAULT_LEASE_S
    poll_s: float = DEFAULT_POLL_S
    outage_s: float = DEFAULT_OUTAGE_S
    # Decides: elapsed time on this process's monotonic clock.
    monotonic: Callable[[], float] = time.monotonic
    # Decides nothing: the pod's wall clock, compared with R2's only to warn about skew.
    clock: Callable[[], float] = pod_wall_clock
    terminate: Callable[[PodIdentity], None] = terminate_self

    def __post_init__(self) -> None:
        now = self.monotonic()
        self.key = lease_key(self.pod.pod_id, self.prefix)
        self.deadline = now + self.lease_s  # on the monotonic clock
        self.last_read_at = now  # the outage clock starts at boot, like the lease
        self.in_outage = False
        self.version: str | None = None
        self.run_id: str | None = None
        self.skew_warned = False

    def read_lease(self) -> LeaseVersion | None:
        """The current version of this pod's lease object; None when there is none (or it is
        unusable)."""
        try:
            response = self.s3.get_object(Bucket=self.bucket, Key=self.key)
            body = response["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING_CODES:
                return None
            raise LeaseUnreadable(f"{code or 'error'}: {exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise LeaseUnreadable(str(exc)) from None
        try:
            lease = json.loads(body)
            if lease.get("pod_id") != self.pod.pod_id:
                raise ValueError(f"it names pod {lease.get('pod_id')!r}")
            granted_s = granted_seconds(lease)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring unusable lease object %s: %s", self.key, exc)
            return None
        age_s, storage_now = storage_age(response)
        modified = response.get("LastModified")
        return LeaseVersion(
            version=f"{response.get('ETag', '')}@{modified.timestamp() if modified else ''}",
            granted_s=granted_s,
            age_s=age_s,
            run_id=lease.get("run_id"),
            storage_now=storage_now,
        )

    def poll(self) -> bool:
        """Read the lease once; True when the pod must end now."""
        try:
            lease = self.read_lease()
        except LeaseUnreadable as exc:
            now = self.monotonic()
            unreadable_for = now - self.last_read_at
            log.warning(
                "cannot read lease %s for %.0f s (%s); the pod keeps running until R2 has been "
                "unreadable for %.0f s",
                self.key,
                unreadable_for,
                exc,
                self.outage_s,
            )
            self.in_outage = True
            return now >= self.deadline and unreadable_for >= self.outage_s
        # Taken after the answer: a slow read can only make the lease look younger (longer).
        now = self.monotonic()
        self.last_read_at = now
        if lease is not None:
            self.accept(lease, now)
            if self.in_outage:
                # The run could not renew while R2 was unreadable either: it gets half a lease
                # from R2's return to write again before the pod judges it gone.
                self.deadline = max(self.deadline, now + lease.granted_s / 2)
        self.in_outage = False
        return now >= self.deadline

    def accept(self, lease: LeaseVersion, now: float) -> None:
        """A new version sets the deadline: written `age_s` ago, good for `granted_s`."""
        self.warn_if_skewed(lease)
        if lease.version == self.version:
            return  # the same write read again: its deadline stands (no second-rounding jitter)
        self.version = lease.version
        self.deadline = now - lease.age_s + lease.granted_s
        if lease.run_id != self.run_id:
            self.run_id = lease.run_id
            log.info("lease held by run %s", self.run_id)
        log.debug("lease runs out in %.0f s", self.deadline - now)

    def warn_if_skewed(self, lease: LeaseVersion) -> None:
        if lease.storage_now is None or self.skew_warned:
            return
        skew = self.clock() - lease.storage_now
        if abs(skew) >= SKEW_WARNING_S:
            self.skew_warned = True
            log.warning(
                "this pod's clock is %.0f s %s R2's; the lease is judged on R2's clock and the "
                "watcher's own elapsed time, so nothing depends on it",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
            )

    def run(self, stop: threading.Event) -> int:
        log.info(
            "watching lease %s: the pod ends itself once it lapses (first deadline in %.0f s)",
            self.key,
            self.deadline - self.monotonic(),
        )
        while not stop.is_set():
            if self.poll():
                return self.end_pod(stop)
            stop.wait(self.poll_s)
        return 0

    def end_pod(self, stop: threading.Event) -> int:
        """Terminate through the API; retried (an API hiccup must not leave the pod billing)."""
        log.warning(
            "lease of pod %s lapsed %.1f s ago (run %s): terminating the pod",
            self.pod.pod_id,
            self.monotonic() - self.deadline,
            self.run_id or "none",
        )
        delay = 5.0
        while not stop.is_set():
            try:
                self.terminate(self.pod)
            except PodApiError as exc:
                wait = exc.retry_after_s if exc.retry_after_s is not None else delay
                log.error(
                    "terminating pod %s failed: %s; retrying in %.0f s", self.pod.pod_id, exc, wait
                )
                stop.wait(wait)
                delay = min(delay * 2, 60.0)
                continue
            log.warning("pod %s terminated itself: its lease lapsed", self.pod.pod_id)
            return 0
        return 0
