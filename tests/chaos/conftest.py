"""Fixtures and report of the chaos suite (`make chaos` writes bench/results/chaos.md/.json)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rp_devstack.fault_proxy import FaultProxy
from rp_devstack.stack import Devstack
from tests.chaos.harness import RESULTS, World, write_report


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--chaos-report",
        default=None,
        metavar="PATH_STEM",
        help="write the chaos table to PATH_STEM.md and PATH_STEM.json",
    )


@pytest.fixture(scope="session")
def r2_proxy(devstack: Devstack) -> Iterator[FaultProxy]:
    """R2 (the moto server) behind a fault proxy: pipeline and pods reach R2 through it."""
    assert devstack.s3 is not None
    proxy = FaultProxy("127.0.0.1", devstack.s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def world(
    devstack: Devstack, r2_proxy: FaultProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    env = {
        **devstack.env,
        "R2_ENDPOINT": r2_proxy.url,
        "RP_ENV": "devstack",
        "RP_PROMPTS_DIR": str(prompts),
        "DAGSTER_HOME": str(home),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RP_MAX_PODS", raising=False)
    chaos = World(devstack, r2_proxy, home, prompts, f"chaos{uuid.uuid4().hex[:6]}")
    chaos.start_watching()
    try:
        yield chaos
    finally:
        r2_proxy.heal()
        chaos.stop_watching()
        # Clears the case's emulator faults and stock changes (and any pod still up).
        chaos.emulator_admin("reset")
        chaos.instance.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    row = RESULTS.get(item.nodeid)
    if row is None or report.when != "call":
        return
    if report.passed:
        row["verdict"] = "pass"
    else:
        reason = str(call.excinfo.value) if call.excinfo else "failed"
        row["verdict"] = "FAIL: " + " ".join(reason.split("\nassert")[0].split())[:300]


def pytest_sessionfinish(session: pytest.Session) -> None:
    stem = session.config.getoption("--chaos-report")
    if stem and RESULTS:
        write_report(Path(stem), list(RESULTS.values()))
