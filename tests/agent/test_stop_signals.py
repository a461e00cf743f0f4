"""A pod stop can reach the agent twice at once: SIGTERM to its process group, and the same
SIGTERM passed on by its supervisor. That is one stop: the agent flushes and exits 0 (a second
signal seconds later still means "exit now")."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from .helpers import AgentRun


def test_a_stop_delivered_twice_at_once_is_one_stop(make_agent: Callable[..., AgentRun]) -> None:
    agent = make_agent().start()
    agent.signal(signal.SIGTERM)
    time.sleep(0.2)  # handled apart, not merged into one pending signal by the kernel
    agent.signal(signal.SIGTERM)
    assert agent.wait(30) == 0, agent.log()
    assert agent.log().count("SIGTERM received: finishing uploads") == 1, agent.log()
    assert "received again" not in agent.log()
