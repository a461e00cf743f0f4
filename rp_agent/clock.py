"""The pod's wall clock, read in one place so tests and the devstack can set it wrong on purpose.

A pod's clock is not the run's clock, nor R2's: a container may boot with its host's clock minutes
off. So nothing on the pod decides anything by comparing its wall clock with a time stamped on
another machine (the lease watcher judges a lease on R2's clock and its own monotonic clock,
lease.py), and every time the agent reports for the pipeline to subtract is a duration measured
here (receipts.py). The wall clock is still what the agent stamps on what it writes (the file's
close time, log lines), and that is what `RP_AGENT_CLOCK_SKEW_S` moves: seconds added to the real
clock, for the devstack and tests that check the pod survives a wrong clock. Never set it on a
real pod.
"""

from __future__ import annotations

import os
import time

SKEW_ENV = "RP_AGENT_CLOCK_SKEW_S"


def _skew_from_env() -> tuple[float, str | None]:
    """(seconds, None), or (0, what is wrong with the setting: the CLI reports it and exits)."""
    text = (os.environ.get(SKEW_ENV) or "").strip()
    try:
        return (float(text) if text else 0.0), None
    except ValueError:
        return 0.0, f"{SKEW_ENV}={text!r} is not a number of seconds"


_SKEW_S, SKEW_ERROR = _skew_from_env()


def skew_s() -> float:
    """Seconds the pod's wall clock is set off from the kernel's (0 outside tests)."""
    return _SKEW_S


def wall() -> float:
    """The pod's wall clock (epoch seconds): for stamps and log lines, never for a decision
    against another machine's time."""
    return time.time() + _SKEW_S


def from_kernel(kernel_time: float) -> float:
    """A time read from the kernel's clock (a watchdog event's `time.time()`), on the pod's wall
    clock. The watcher stays on the kernel's clock: it compares event times with file mtimes."""
    return kernel_time + _SKEW_S
