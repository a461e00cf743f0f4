"""The Dagster internals the pipeline relies on, in one module. Each has no public equivalent
in the pinned Dagster; tests/pipeline/test_dagster_internals.py pins the behaviour used here,
and pyproject keeps dagster below the next minor release until that test passes on it.

- `hold_interrupts`: while a pod's terminate call is in flight, a SIGINT/SIGTERM is held (not
  raised), so a second Ctrl-C or a cancel cannot cut the call short and leave the pod billing.
- `PoolStorage`: the instance's concurrency pools, claimed per pod rather than per op step
  (Dagster's op-level pool frees a slot when the launch step ends, while the pod lives on).
"""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance
from dagster._utils.interrupts import capture_interrupts as hold_interrupts

__all__ = ["PoolStorage", "hold_interrupts"]


class PoolStorage:
    """Slots of a named concurrency pool in the instance's event log storage, claimed by
    (run id, key): a key names one pod of the run."""

    def __init__(self, instance: DagsterInstance) -> None:
        self._storage: Any = instance.event_log_storage

    @property
    def supported(self) -> bool:
        return bool(self._storage.supports_global_concurrency_limits)

    def pools(self) -> set[str]:
        return set(self._storage.get_concurrency_keys())

    def set_limit(self, pool: str, slots: int) -> None:
        self._storage.set_concurrency_slots(pool, slots)

    def limit(self, pool: str) -> int:
        return int(self._storage.get_concurrency_info(pool).slot_count)

    def holders(self, pool: str) -> dict[str, list[str]]:
        """Run id -> the keys it holds slots of."""
        held: dict[str, list[str]] = {}
        for slot in self._storage.get_concurrency_info(pool).claimed_slots:
            held.setdefault(slot.run_id, []).append(slot.step_key)
        return held

    def claim(self, pool: str, run_id: str, key: str, priority: int = 0) -> bool:
        """Claim a slot, or wait in the pool's queue: a slot that comes free goes to the
        waiting claim of highest priority, then to the earliest."""
        status = self._storage.claim_concurrency_slot(pool, run_id, key, priority=priority)
        return bool(status.is_claimed)

    def free(self, run_id: str, key: str) -> None:
        self._storage.free_concurrency_slot_for_step(run_id, key)

    def free_run(self, run_id: str) -> None:
        if self.supported:
            self._storage.free_concurrency_slots_for_run(run_id)

    def database_url(self) -> Any:
        """The SQLAlchemy URL of the storage's database (its backend name, database path)."""
        with self._storage.index_connection() as conn:
            return conn.engine.url
