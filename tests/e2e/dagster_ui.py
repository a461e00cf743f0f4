"""`dg dev` (webserver + daemon) on a free loopback port, against the devstack.

The daemon matters: it runs the run queue, the pod reaper and the run-status sensors that
terminate pods of failed/cancelled runs. Everything runs in its own process group so teardown
reaches the webserver, the daemon, code servers and run workers alike.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import requests

from rp_devstack.dev import own_session_with_default_signals, stop_dg_dev
from rp_devstack.ports import free_port

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0  # a shared 2-core box needs ~30 s; leave room


class DagsterUIError(RuntimeError):
    pass


def dg_executable() -> str:
    """`dg` from this venv (no `uv run` round trip), else from PATH."""
    beside = Path(sys.executable).with_name("dg")
    if beside.exists():
        return str(beside)
    found = shutil.which("dg")
    if not found:
        raise DagsterUIError("dg is not installed (uv sync --all-extras)")
    return found


class DagsterUI:
    """`dg dev` for `rp_pipeline.definitions` with a throwaway DAGSTER_HOME."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.home = workdir / "dagster_home"
        self.log_path = workdir / "dg-dev.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DagsterUI:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        # The 'Join the Dagster community' dialog pops up over the first page a second after
        # it loads; mark it seen for this throwaway instance (what its Skip button records).
        (self.home / ".nux").mkdir(exist_ok=True)
        (self.home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        env = {**os.environ, **self.env, "RP_ENV": "devstack", "DAGSTER_HOME": str(self.home)}
        argv = [dg_executable(), "dev", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=own_session_with_default_signals,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """The webserver answers /server_info and the code location has loaded."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise DagsterUIError(f"dg dev exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/server_info", timeout=5).ok:
                    body = requests.post(
                        f"{self.url}/graphql", json={"query": query}, timeout=10
                    ).json()
                    entries = body["data"]["workspaceOrError"]["locationEntries"]
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        return
            except (requests.RequestException, KeyError, TypeError, ValueError):
                pass
            time.sleep(1.0)
        raise DagsterUIError(
            f"Dagster UI not ready after {READY_TIMEOUT_S:.0f} s: {self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_dg_dev(proc)
