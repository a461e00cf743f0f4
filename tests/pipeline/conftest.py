"""The pipeline tests' own guard; their fixtures (devstack env, a fresh Dagster instance per
test, resources) are in tests/dagster_fixtures.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rp_devstack.stack import Devstack


@pytest.fixture(autouse=True)
def _no_pod_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every devstack test must leave no pod of its own running."""
    yield
    if "devstack" not in request.fixturenames:
        return
    stack: Devstack = request.getfixturevalue("devstack")
    live = [p["id"] for p in stack.emulator.pods() if p["desired_status"] != "TERMINATED"]
    if live:
        for pod_id in live:
            stack.emulator.terminate_pod(pod_id)
        pytest.fail(f"pods left running: {live}")
