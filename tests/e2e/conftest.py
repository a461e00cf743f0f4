"""Fixtures for the end-to-end tests: a devstack of their own, `dg dev` on a free port against
it, headless Chromium, and a screenshot directory printed at the end of the session.

Screenshots go to `$E2E_SCREENSHOT_DIR` (default: a pytest temp dir). With
`E2E_UPDATE_DOCS_IMG=1` the tests also copy their best shots into `docs/img/`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rp_devstack.stack import Devstack
from rp_pipeline.integrations.runpod.client import Pod
from tests.e2e.browser import NO_BROWSER, UI, browser_available, make_driver
from tests.e2e.dagster_ui import REPO_ROOT, DagsterUI


def is_gone(pod: dict) -> bool:
    """An emulator pod (admin view) judged as the pipeline judges a RunPod pod (`Pod.is_gone`);
    the admin view's `desired_status` is the emulator's own status, ERROR included."""
    status = pod["desired_status"]
    return Pod.from_record({"id": pod["id"], "desiredStatus": status, "status": status}).is_gone


DOCS_IMG = REPO_ROOT / "docs" / "img"
_SHOTS_KEY = pytest.StashKey[Path]()


class E2EStack:
    """The devstack and the Dagster UI started on it, shared by the e2e tests."""

    def __init__(self, devstack: Devstack, dagster: DagsterUI) -> None:
        self.devstack = devstack
        self.dagster = dagster

    @property
    def url(self) -> str:
        return self.dagster.url

    def live_pods(self) -> list[dict]:
        return [p for p in self.devstack.emulator.pods() if not is_gone(p)]

    def pods_of_run(self, run_id: str) -> list[dict]:
        return [
            p for p in self.devstack.emulator.pods() if p["env"].get("DAGSTER_RUN_ID") == run_id
        ]


@pytest.fixture(scope="package")  # torn down before the rest of the suite runs
def e2e_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2EStack]:
    """Own devstack (so 'zero pods left' means ours) + `dg dev` with a temp DAGSTER_HOME."""
    root = tmp_path_factory.mktemp("e2e")
    stack = Devstack(root / "devstack", boot_delay_s=0.5, agent_grace_s=10.0)
    stack.start()
    # The cancel test renders a 5000-step request to be certainly mid-generation when it
    # clicks Terminate: above the default step budget (100), so this instance allows it.
    dagster = DagsterUI(root, {**stack.env, "RP_MAX_STEPS": "5000"})
    try:
        dagster.start()
        yield E2EStack(stack, dagster)
    finally:
        dagster.stop()
        stack.stop()


@pytest.fixture(scope="session")
def screenshots_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    chosen = os.environ.get("E2E_SCREENSHOT_DIR")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("e2e-screenshots")
    path.mkdir(parents=True, exist_ok=True)
    request.config.stash[_SHOTS_KEY] = path
    return path


@pytest.fixture
def browser_ui(
    e2e_stack: E2EStack, screenshots_dir: Path, request: pytest.FixtureRequest
) -> Iterator[UI]:
    if not browser_available():  # the modules skip first; this guards other users
        pytest.skip(NO_BROWSER)
    shots = screenshots_dir / request.node.name
    shots.mkdir(parents=True, exist_ok=True)
    driver = make_driver()
    try:
        yield UI(driver, e2e_stack.url, shots)
    finally:
        driver.quit()


def publish_to_docs(shot: Path, name: str) -> None:
    """Copy a screenshot into docs/img when asked to (E2E_UPDATE_DOCS_IMG=1)."""
    if os.environ.get("E2E_UPDATE_DOCS_IMG") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_IMG / name)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    path = config.stash.get(_SHOTS_KEY, None)
    if path is not None:
        terminalreporter.write_line(f"e2e screenshots: {path}")
