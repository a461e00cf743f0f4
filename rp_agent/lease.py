"""`rp-agent lease-watch`: the pod stops itself once the run that uses it stops renewing its lease.

A run whose process died (killed host, OOM, lost daemon) cannot terminate its pod, and where no
Dagster daemon runs nothing else would. So the pod holds a lease: the run writes the R2 object
`{prefix}/_rp/leases/{pod id}.json` = {"pod_id", "run_id", "renewed_at", "expires_at"} (epoch
seconds) and renews it while it is alive; this watcher reads it every few seconds and, once
`expires_at` has passed, ends the pod through RunPod's API with the pod's own id and key (as
SkyPilot's autostop runs on the machine it stops).

Rules:
- Before the first lease object exists the lease counts from the watcher's start (the pod's
  boot): `RP_POD_LEASE_S` seconds (default 300).
- The latest object read decides, even when it moved `expires_at` earlier (a run may release
  its pod that way). A deleted object leaves the last known deadline in force.
- An R2 outage must not kill a pod whose run is alive: while the object cannot be read, the
  deadline is not enforced until R2 has been unreadable for `RP_POD_LEASE_OUTAGE_S` (default
  1800 s). A pod whose run died during an R2 outage is thus ended at most that much later.
- Clocks: `expires_at` comes from the run's host; both ends run NTP, and a few seconds of skew
  are small against a lease of minutes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

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


class LeaseUnreadable(Exception):
    """R2 did not answer with the object or a clean 'not found'."""


@dataclass
class LeaseWatcher:
    s3: Any  # a boto3 S3 client from rp_agent.r2.make_r2_client
    bucket: str
    prefix: str
    pod: PodIdentity
    lease_s: float = DEFAULT_LEASE_S
    poll_s: float = DEFAULT_POLL_S
    outage_s: float = DEFAULT_OUTAGE_S
    clock: Callable[[], float] = time.time
    terminate: Callable[[PodIdentity], None] = terminate_self

    def __post_init__(self) -> None:
        now = self.clock()
        self.key = lease_key(self.pod.pod_id, self.prefix)
        self.deadline = now + self.lease_s
        self.last_read_at = now  # the outage clock starts at boot, like the lease
        self.run_id: str | None = None

    def read_expiry(self) -> float | None:
        """`expires_at` of this pod's lease object; None when there is none (or it is unusable)."""
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
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
            expires_at = float(lease["expires_at"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("ignoring unusable lease object %s: %s", self.key, exc)
            return None
        if lease.get("run_id") != self.run_id:
            self.run_id = lease.get("run_id")
            log.info("lease held by run %s", self.run_id)
        return expires_at

    def poll(self) -> bool:
        """Read the lease once; True when the pod must end now."""
        now = self.clock()
        try:
            expires_at = self.read_expiry()
        except LeaseUnreadable as exc:
            unreadable_for = now - self.last_read_at
            log.warning(
                "cannot read lease %s for %.0f s (%s); the pod keeps running until R2 has been "
                "unreadable for %.0f s",
                self.key,
                unreadable_for,
                exc,
                self.outage_s,
            )
            return now >= self.deadline and unreadable_for >= self.outage_s
        self.last_read_at = now
        if expires_at is not None and expires_at != self.deadline:
            self.deadline = expires_at
            log.debug("lease runs until %.0f (in %.0f s)", expires_at, expires_at - now)
        return now >= self.deadline

    def run(self, stop: threading.Event) -> int:
        log.info(
            "watching lease %s: the pod ends itself once it lapses (first deadline in %.0f s)",
            self.key,
            self.deadline - self.clock(),
        )
        while not stop.is_set():
            if self.poll():
                return self.end_pod(stop)
            stop.wait(self.poll_s)
        return 0

    def end_pod(self, stop: threading.Event) -> int:
        """Terminate through the API; retried (an API hiccup must not leave the pod billing)."""
        log.warning(
            "lease of pod %s lapsed at %.0f, %.1f s ago (run %s): terminating the pod",
            self.pod.pod_id,
            self.deadline,
            self.clock() - self.deadline,
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
