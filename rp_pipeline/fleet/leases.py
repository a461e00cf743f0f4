"""The run's lease on its pods: an R2 object per pod that says "a live run still uses me".

Written right after the pod is created and renewed every `lease_s / 3` by a background thread
for as long as an op of the run holds the pod; deleted when the pod is terminated. If the run's
process dies (SIGKILL, OOM, a lost machine) nobody renews it: the pod's watcher stops the pod
once `expires_at` has passed, and the reaper sensor marks such a run failed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from rp_agent.keys import lease_key

log = logging.getLogger(__name__)


def lease_body(pod_id: str, run_id: str, lease_s: float, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    return json.dumps(
        {
            "pod_id": pod_id,
            "run_id": run_id,
            "renewed_at": round(now, 3),
            "expires_at": round(now + lease_s, 3),
        }
    ).encode()


def read_lease(r2: Any, pod_id: str) -> dict[str, Any] | None:
    """The pod's lease, or None when there is none (or it cannot be read as JSON)."""
    key = lease_key(pod_id, r2.prefix)
    if r2.head(key) is None:
        return None
    try:
        body: dict[str, Any] = json.loads(r2.get_bytes(key))
    except ValueError:
        return None
    return body


class LeaseKeeper:
    """Renews the leases of a set of pods in the background while an op runs (`with`)."""

    def __init__(self, r2: Any, run_id: str, lease_s: float, pod_ids: Iterable[str] = ()) -> None:
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
