"""Fixtures: a watch dir and a factory of real `rp-agent sync` processes (all stopped at the end)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rp_agent.r2 import R2Settings

from .helpers import AgentRun, agent_env


@pytest.fixture
def watch_dir(tmp_path: Path) -> Path:
    path = tmp_path / "output"
    path.mkdir()
    return path


@pytest.fixture
def make_agent(
    tmp_path: Path, watch_dir: Path, r2_settings: R2Settings
) -> Iterator[Callable[..., AgentRun]]:
    """Factory for agent processes sharing one watch dir and state dir; all stopped at the end."""
    runs: list[AgentRun] = []

    def make(*extra_args: str, settings: R2Settings | None = None) -> AgentRun:
        run = AgentRun(
            watch_dir=watch_dir,
            state_dir=tmp_path / "state",
            env=agent_env(settings or r2_settings),
            log_path=tmp_path / f"agent-{len(runs)}.log",
            extra_args=["--rescan-interval", "2", *extra_args],
        )
        runs.append(run)
        return run

    try:
        yield make
    finally:
        for run in runs:
            run.stop()
