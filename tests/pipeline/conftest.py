"""Fixtures for the pipeline tests: devstack env + a fresh Dagster instance per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from rp_devstack.stack import Devstack


@pytest.fixture
def prompts_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "prompts"
    directory.mkdir()
    monkeypatch.setenv("RP_PROMPTS_DIR", str(directory))
    return directory


@pytest.fixture
def pipeline_env(
    devstack: Devstack, prompts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    for name, value in devstack.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RP_ENV", "devstack")
    return dict(devstack.env)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_for_test(temp_dir=str(home)) as inst:
        yield inst


@pytest.fixture
def resources(pipeline_env: dict[str, str]) -> dict[str, Any]:
    from rp_pipeline.definitions import resources_for

    return resources_for("devstack")


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
