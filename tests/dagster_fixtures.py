"""Fixtures for tests that run Dagster on the devstack: the devstack's env, a prompts dir, a
fresh Dagster instance per test and the devstack resources (registered in tests/conftest.py)."""

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
