"""Pod slots: the instance's `runpod_pods` concurrency pool, one slot per live pod.

A slot is claimed BEFORE a pod is created and freed once the pod is terminated, through the
instance's concurrency storage (a database row per slot), so simultaneous runs cannot both see
"one slot free" and both launch: the storage hands each slot to one claimant. Dagster's own
op-level pool would free the slot when the launch step ends, while the pod lives on; hence
claims are made per pod with a step key of their own (`pod-<n>`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

POD_POOL = "runpod_pods"


def slot_key(index: int) -> str:
    return f"pod-{index}"


class PodSlots:
    """Claims and frees `runpod_pods` slots for one run."""

    def __init__(self, instance: Any, run_id: str, default_limit: int) -> None:
        self.storage = instance.event_log_storage
        self.run_id = run_id
        if not self.storage.supports_global_concurrency_limits:
            raise RuntimeError(
                "this Dagster instance's storage has no concurrency pools; pod limits need them "
                "(use the default sqlite or a postgres storage)"
            )
        # The limit is the instance's when an operator set one; else RP_MAX_PODS.
        if POD_POOL not in self.storage.get_concurrency_keys():
            self.storage.set_concurrency_slots(POD_POOL, max(1, default_limit))

    @property
    def limit(self) -> int:
        return int(self.storage.get_concurrency_info(POD_POOL).slot_count)

    def try_claim(self, key: str) -> bool:
        status = self.storage.claim_concurrency_slot(POD_POOL, self.run_id, key)
        return bool(status.is_claimed)

    def claim(self, want: int, wait_s: float, on_wait: Any = None) -> list[str]:
        """Up to `want` slots: waits up to `wait_s` for the first, then takes what is free.
        Unclaimed requests are withdrawn so they do not block other runs' claims."""
        keys = [slot_key(i) for i in range(want)]
        give_up = time.monotonic() + wait_s
        claimed: list[str] = []
        while True:
            claimed = [key for key in keys if self.try_claim(key)]
            if claimed or time.monotonic() >= give_up:
                break
            if on_wait:
                on_wait()
            time.sleep(1.0)
        for key in keys:
            if key not in claimed:
                self.free(key)
        return claimed

    def free(self, key: str) -> None:
        try:
            self.storage.free_concurrency_slot_for_step(self.run_id, key)
        except Exception as exc:  # a later free (sensor, run end) retries; never mask the cause
            log.warning("could not free pod slot %s of run %s: %s", key, self.run_id, exc)


def free_run_slots(instance: Any, run_id: str) -> None:
    """Free every pod slot of a run that ended (the failure sensor and reaper call this)."""
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)
