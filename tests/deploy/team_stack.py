"""The team deployment as separate processes on one machine: a code server (`dagster api
grpc`), the webserver and `dagster-daemon`, each started through `rp_pipeline.tools.service` on the
instance rendered from deploy/dagster.yaml (PostgreSQL), against the devstack.

The same commands as deploy/compose.yaml, with loopback ports instead of service names. Each
service has a process group of its own: the daemon can be killed alone, and teardown reaches
run workers (children of the code server) too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from rp_devstack.dev import own_session_with_default_signals, stop_dg_dev
from rp_devstack.ports import free_port, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 240.0  # a loaded 2-core box

DAEMON_HEALTH = """
{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"""
WORKSPACE = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


class ServiceError(RuntimeError):
    pass


class TeamDagster:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.home = workdir / "dagster_home"
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(self.home)}
        self.code_port = free_port()
        self.web_port = free_port()
        self.workspace = workdir / "workspace.yaml"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.daemon_starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def _write_workspace(self) -> None:
        """deploy/workspace.yaml with this machine's code server address."""
        workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
        (entry,) = workspace["load_from"]
        entry["grpc_server"] |= {"host": "127.0.0.1", "port": self.code_port}
        self.workspace.write_text(yaml.safe_dump(workspace))

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        argv = [
            sys.executable,
            "-m",
            "rp_pipeline.tools.service",
            "--template",
            str(DEPLOY / "dagster.yaml"),
            "--",
            *command,
        ]
        with open(self.log_path(name), "ab") as out:
            proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=own_session_with_default_signals,
            )
        self.procs[name] = proc
        return proc

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> TeamDagster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_workspace()
        # The 'Join the Dagster community' dialog would cover the first page; mark it seen.
        (self.home / ".nux").mkdir(parents=True, exist_ok=True)
        (self.home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        try:
            self._spawn(
                "code-server",
                [
                    str(BIN / "dagster"),
                    "api",
                    "grpc",
                    "--module-name",
                    "rp_pipeline.definitions",
                    "--location-name",
                    "rp_pipeline",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.code_port),
                ],
            )
            wait_for_port(self.code_port, timeout=READY_TIMEOUT_S)
            self._spawn(
                "webserver",
                [
                    str(BIN / "dagster-webserver"),
                    "-w",
                    str(self.workspace),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.web_port),
                ],
            )
            self.start_daemon()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def start_daemon(self) -> None:
        self.daemon_starts += 1
        self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])

    def kill_daemon(self) -> int:
        """SIGKILL: no shutdown handler runs, as when a machine or container dies."""
        proc = self.procs.pop("daemon")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return proc.pid

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        if not response.ok:
            raise ServiceError(f"GraphQL {response.status_code}: {response.text[:500]}")
        body = response.json()
        if body.get("errors"):
            raise ServiceError(str(body["errors"]))
        return dict(body["data"])

    def daemons_healthy(self, *types: str) -> bool:
        statuses = self.graphql(DAEMON_HEALTH)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        return set(types) <= healthy

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ServiceError(f"{name} exited ({proc.returncode}): {self.log_tail(name)}")
            try:
                entries = self.graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
                if (
                    entries
                    and all(e["loadStatus"] == "LOADED" for e in entries)
                    and self.daemons_healthy("QUEUED_RUN_COORDINATOR", "SENSOR")
                ):
                    return
            except (requests.RequestException, ServiceError, KeyError, TypeError, ValueError):
                pass
            time.sleep(1.0)
        raise ServiceError(f"services not ready after {READY_TIMEOUT_S:.0f} s")

    def wait_daemon_healthy(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.daemons_healthy("QUEUED_RUN_COORDINATOR", "SENSOR"):
                return
            time.sleep(1.0)
        raise ServiceError(f"daemon not healthy after {timeout_s:.0f} s: {self.log_tail('daemon')}")

    def stop(self) -> None:
        """Daemon first (nothing new starts), then the webserver, then the code server and the
        run workers it launched."""
        for name in ("daemon", "webserver", "code-server"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_dg_dev(proc)
