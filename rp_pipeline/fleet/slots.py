"""Pod slots: the instance's `runpod_pods` concurrency pool, one slot per live pod.

A slot is claimed BEFORE a pod is created and freed once the pod is terminated, through the
instance's concurrency storage (a database row per slot), so simultaneous runs cannot both see
"one slot free" and both launch: the storage hands each slot to one claimant. Dagster's own
op-level pool would free the slot when the launch step ends, while the pod lives on; hence
claims are made per pod with a step key of their own (`pod-<n>`).

On SQLite the storage's claim is not atomic by itself: it reads a free slot row, then writes its
claim on that row by id, and SQLite ignores the `SELECT ... FOR UPDATE SKIP LOCKED` that makes
this safe on PostgreSQL. Two processes that read the same free row both "claim" it (the later
write wins the row, both launch a pod). So on a SQLite file the claims of all processes are
serialized by a lock file beside the database.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from rp_pipeline.integrations.dagster_internals import PoolStorage

log = logging.getLogger(__name__)

POD_POOL = "runpod_pods"


def slot_key(index: int) -> str:
    return f"pod-{index}"


class PodSlots:
    """Claims and frees `runpod_pods` slots for one run."""

    def __init__(self, instance: Any, run_id: str, default_limit: int, priority: int = 0) -> None:
        # A waiting run of higher priority (its `dagster/priority` tag) gets the next free slot.
        self.priority = priority
        self.storage = PoolStorage(instance)
        self.run_id = run_id
        if not self.storage.supported:
            raise RuntimeError(
                "this Dagster instance's storage has no concurrency pools; pod limits need them "
                "(use the default sqlite or a postgres storage)"
            )
        self.claim_lock = claim_lock(self.storage)
        # The limit is the instance's when an operator set one; else RP_MAX_PODS.
        if POD_POOL not in self.storage.pools():
            try:
                self.storage.set_limit(POD_POOL, max(1, default_limit))
            except Exception:
                # Runs started together all find no pool and all create it; the pool's name is
                # unique, so every creation but the first fails. The pool exists: go on.
                if POD_POOL not in self.storage.pools():
                    raise

    @property
    def limit(self) -> int:
        return self.storage.limit(POD_POOL)

    def try_claim(self, key: str) -> bool:
        with self.claim_lock:
            return self.storage.claim(POD_POOL, self.run_id, key, self.priority)

    def claim(
        self,
        want: int,
        wait_s: float,
        on_wait: Any = None,
        reconcile: Callable[[], object] | None = None,
        reconcile_every_s: float = 30.0,
    ) -> list[str]:
        """Up to `want` slots: waits up to `wait_s` for the first, then takes what is free.
        While none is free, `reconcile` (freeing slots whose pods are gone) runs at once and
        then every `reconcile_every_s`. Unclaimed requests are withdrawn so they do not block
        other runs' claims."""
        keys = [slot_key(i) for i in range(want)]
        give_up = time.monotonic() + wait_s
        claimed: list[str] = []
        reconciled_at: float | None = None
        while True:
            claimed = [key for key in keys if self.try_claim(key)]
            if claimed or time.monotonic() >= give_up:
                break
            if reconcile and (
                reconciled_at is None or time.monotonic() - reconciled_at >= reconcile_every_s
            ):
                reconciled_at = time.monotonic()
                reconcile()
                continue
            if on_wait:
                on_wait()
            time.sleep(1.0)
        for key in keys:
            if key not in claimed:
                self.free(key)
        return claimed

    def holders(self) -> dict[str, list[str]]:
        """Run id -> the pod slots it holds, this run's included."""
        return self.storage.holders(POD_POOL)

    def free(self, key: str) -> None:
        try:
            self.storage.free(self.run_id, key)
        except Exception as exc:  # a later free (sensor, run end) retries; never mask the cause
            log.warning("could not free pod slot %s of run %s: %s", key, self.run_id, exc)


def claim_lock(storage: PoolStorage) -> contextlib.AbstractContextManager[Any]:
    """The lock that makes a slot claim atomic across processes: a lock file beside a SQLite
    database file; none for a database that locks the claimed row itself (PostgreSQL) or one
    only this process can open (in memory)."""
    url = storage.database_url()
    in_memory = url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"
    if url.get_backend_name() != "sqlite" or in_memory:
        return contextlib.nullcontext()
    return FileLock(Path(url.database).with_name(f"{POD_POOL}.lock"))


def free_run_slots(instance: Any, run_id: str) -> None:
    """Free every pod slot of a run that ended (the failure sensor and reaper call this)."""
    PoolStorage(instance).free_run(run_id)
