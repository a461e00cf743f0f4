"""Pins the behaviour of the Dagster internals wrapped in rp_pipeline.integrations.dagster_internals:
if a Dagster upgrade changes any of it, this fails before a pod slot leaks or a terminate call is
cut short."""

from __future__ import annotations

import os
import signal
import time

from dagster import DagsterInstance

from rp_pipeline.integrations.dagster_internals import PoolStorage, hold_interrupts

POOL = "pin_test_pool"


def test_pool_slots_are_claimed_per_run_and_key_and_freed(instance: DagsterInstance) -> None:
    pools = PoolStorage(instance)
    assert pools.supported
    pools.set_limit(POOL, 1)
    assert POOL in pools.pools()
    assert pools.limit(POOL) == 1
    assert pools.claim(POOL, "run-a", "pod-0")
    assert not pools.claim(POOL, "run-b", "pod-0"), "a full pool handed out a second slot"
    pools.free("run-a", "pod-0")
    pools.free("run-b", "pod-0")  # withdraw b's pending claim, as PodSlots.claim does
    assert pools.claim(POOL, "run-b", "pod-0")
    pools.free_run("run-b")
    assert pools.claim(POOL, "run-c", "pod-1")


def test_the_database_url_names_the_sqlite_file(instance: DagsterInstance) -> None:
    url = PoolStorage(instance).database_url()
    assert url.get_backend_name() == "sqlite"
    assert url.database and os.path.isabs(url.database)


def test_a_signal_during_a_held_call_does_not_cut_it_short() -> None:
    # Python's own handler, as a run's process has it (pytest started in the background by a
    # shell inherits SIGINT ignored, and Python then installs none).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        finished = False
        with hold_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the signal is delivered and held here
            finished = True
        assert finished
        # Outside the block the usual handler is back: a SIGINT interrupts again.
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)
