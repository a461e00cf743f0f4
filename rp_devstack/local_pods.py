"""A RunPod pod as local processes, as docker/start.sh runs them in the real image: the ComfyUI
stand-in on a loopback port, `rp-agent proxy` owning the pod's public ComfyUI port (only the pod's
token passes), `rp-agent sync` when the pod asks for it, and `rp-agent lease-watch`; the last three
under `rp-agent supervise` (restarted with backoff when they die), as start.sh runs them.

Each pod owns a directory shaped like the real image's volume (`workspace/ComfyUI/output`), runs
every process in its own session (so one `killpg` ends the process and anything it spawned) and
gets only the environment a real container would: the pod's env with secret references resolved,
plus the `RUNPOD_*` variables RunPod injects (the pod id, and an API key good for this pod only,
with which the lease watcher ends the pod). Every process runs under a small guard
(`python -m rp_devstack.local_pods --parent PID -- argv`) that ends its process group when the
emulator's process dies without cleaning up (SIGKILL, a crashed test run): no orphaned pods. The host's own R2/RunPod variables never leak in, so
a pod that forgot to pass its settings fails here exactly as it would on RunPod.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rp_agent import bootstatus
from rp_agent.clock import SKEW_ENV
from rp_devstack.ports import free_port

log = logging.getLogger(__name__)

COMFYUI_PRIVATE_PORT = 8188
# The image's defaults (docker/Dockerfile, start.sh): a pod holds a lease unless its env says 0.
DEFAULT_LEASE_S = "300"
R2_NAMES = ("R2_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")

# Processes whose output files (logs/<name>.log) the agent ships to R2 for the run's log.
LOGGED_PROCESSES = ("comfyui", "proxy", "lease")

# What a container inherits from the host: enough to run Python, nothing with credentials.
_HOST_ENV_KEPT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")

# (port, output_dir, input_dir, pod_env) -> argv of the ComfyUI process.
ComfyCommand = Callable[[int, Path, Path, dict[str, str]], Sequence[str]]


def standin_command(port: int, output_dir: Path, input_dir: Path, env: dict[str, str]) -> list[str]:
    """The ComfyUI stand-in (contract 2), the default 'image' of every local pod."""
    argv = [
        sys.executable,
        "-m",
        "rp_devstack.comfyui_standin",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--output-dir",
        str(output_dir),
        "--input-dir",
        str(input_dir),
    ]
    if env.get("COMFY_STANDIN_STEP_SECONDS"):
        argv += ["--step-seconds", env["COMFY_STANDIN_STEP_SECONDS"]]
    # The pod's GPU work, step by step, beside (not in) the output folder the agent watches.
    return [*argv, "--gpu-meter", str(gpu_meter_path(output_dir))]


def gpu_meter_path(output_dir: Path) -> Path:
    """`workspace/ComfyUI/gpu_meter.jsonl` of a local pod whose output folder is given."""
    return output_dir.parent / "gpu_meter.jsonl"


def agent_executable() -> str:
    """`rp-agent` installed beside this interpreter (the venv), else from PATH."""
    beside = Path(sys.executable).with_name("rp-agent")
    if beside.exists():
        return str(beside)
    found = shutil.which("rp-agent")
    if not found:
        raise FileNotFoundError("rp-agent is not installed in this environment (uv sync)")
    return found


def supervised(agent: str, name: str) -> list[str]:
    """The argv prefix that runs a pod process under `rp-agent supervise`: restarted with
    backoff when it dies, by the same command docker/start.sh uses in the image."""
    return [agent, "supervise", "--name", name, "--"]


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class LocalPod:
    """The processes of one pod. `start()` launches them; `stop()` ends them, agent first."""

    pod_id: str
    root: Path
    env: dict[str, str]
    comfy_command: ComfyCommand = standin_command
    agent_grace_s: float = 15.0
    # What RunPod injects so a pod can call the API about itself (the emulator's URL and a key
    # the emulator accepts for this pod only).
    api_base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    # The pod's public ComfyUI port (the proxy's; RunPod maps 8188 to it) and ComfyUI's own,
    # reachable from this machine only.
    comfy_port: int = field(default_factory=free_port)
    comfy_internal_port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)
    # Guards `processes` against ComfyUI starting (after the model fetch) while a stop runs.
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopped: bool = False

    @property
    def output_dir(self) -> Path:
        return self.root / "workspace" / "ComfyUI" / "output"

    @property
    def input_dir(self) -> Path:
        return self.root / "workspace" / "ComfyUI" / "input"

    @property
    def sync_enabled(self) -> bool:
        return truthy(self.env.get("ENABLE_R2_SYNC"))

    @property
    def lease_enabled(self) -> bool:
        """start.sh's rule: a lease unless RP_POD_LEASE_S is 0, and R2 to read it from."""
        try:
            lease_s = float(self.env.get("RP_POD_LEASE_S") or DEFAULT_LEASE_S)
        except ValueError:
            return True  # the watcher itself reports the bad value
        return lease_s > 0 and all(self.env.get(name) for name in R2_NAMES)

    @property
    def models_dir(self) -> Path:
        """start.sh's $MODELS_DIR: the weights stay out (the stand-in needs none), but the files
        a pod fetches at boot (the run's LoRAs) land here and the stand-in lists them."""
        return self.root / "workspace" / "ComfyUI" / "models"

    @property
    def boot_status(self) -> Path:
        """The pod's boot status file (start.sh's `$RP_AGENT_STATE_DIR/boot.json`)."""
        return self.root / "agent-state" / "boot.json"

    def start(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.input_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        process_env = self._process_env()
        bootstatus.update(self.boot_status, phase="container_started", now=self.pod_clock())
        # As start.sh: with files to fetch (the run's LoRAs), ComfyUI starts once the download
        # is done, in the background, so the pod's create call returns at once as on RunPod.
        fetch = bool(self.env.get("RP_LORAS"))
        if fetch:
            self._spawn("models", [sys.executable, "-m", "rp_agent.models"], process_env)
        else:
            self._start_comfyui(process_env)
        agent = agent_executable()
        proxy_argv = [
            *supervised(agent, "token proxy"),
            agent,
            "proxy",
            "--listen",
            f"127.0.0.1:{self.comfy_port}",
            "--upstream",
            f"127.0.0.1:{self.comfy_internal_port}",
        ]
        self._spawn("proxy", proxy_argv, process_env)
        if self.sync_enabled:
            argv = [
                *supervised(agent, "rp-agent"),
                agent,
                "sync",
                "--watch-dir",
                str(self.output_dir),
                "--state-dir",
                str(self.root / "agent-state"),
            ]
            self._spawn("agent", argv, process_env)
        if self.lease_enabled:
            argv = [*supervised(agent, "lease watcher"), agent, "lease-watch"]
            self._spawn("lease", argv, process_env)
        if fetch:
            threading.Thread(
                target=self._comfyui_after_models, args=(process_env,), daemon=True
            ).start()
        threading.Thread(target=self._note_comfyui_ready, daemon=True).start()
        log.info(
            "local pod %s started (ComfyUI behind the token proxy on port %d)",
            self.pod_id,
            self.comfy_port,
        )

    def _start_comfyui(self, env: dict[str, str]) -> None:
        self._boot_phases_before_comfyui()
        comfy_argv = self.comfy_command(
            self.comfy_internal_port, self.output_dir, self.input_dir, self.env
        )
        self._spawn("comfyui", list(comfy_argv), env)

    def _comfyui_after_models(self, env: dict[str, str], timeout_s: float = 300.0) -> None:
        """The same rp_agent.models code as the image put the run's LoRAs into models/loras/
        (its lines in logs/models.log); then ComfyUI starts, even after a failed download, as
        start.sh does. Nothing starts once the pod is being stopped."""
        proc = self.processes.get("models")
        if proc is None:
            return
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            end_process_group(proc, 1.0)
            status = -1
        if status != 0:
            log.warning("local pod %s: model download failed (status %s)", self.pod_id, status)
        with self._lock:
            if self._stopped:
                return
            self.processes.pop("models", None)
            self._start_comfyui(env)

    def _boot_phases_before_comfyui(self) -> None:
        """The phases start.sh records, for a pod whose models are all in place (the
        stand-in needs none): the run sees the same boot phases as from a RunPod pod."""
        status = self.boot_status
        for phase in ("container_started", "models_started"):
            bootstatus.update(status, phase=phase, now=self.pod_clock())
        if "models" not in bootstatus.read(status):  # the downloader (LoRAs) did not run
            models = {"state": "verified", "files_total": 0, "files_skipped": 0}
            models |= {"bytes_downloaded": 0}
            bootstatus.update(status, phase="models_verified", models=models, now=self.pod_clock())
        bootstatus.update(status, phase="comfyui_started", now=self.pod_clock())

    def pod_clock(self) -> float:
        """The pod's wall clock: this machine's moved by the pod's `RP_AGENT_CLOCK_SKEW_S` (as
        its agent and ComfyUI stamp times), for what this process stamps on the pod's behalf."""
        try:
            return time.time() + float(self.env.get(SKEW_ENV) or 0.0)
        except ValueError:
            return time.time()  # the pod's agent reports the bad value

    def _note_comfyui_ready(self, give_up_s: float = 300.0) -> None:
        give_up = time.monotonic() + give_up_s
        while time.monotonic() < give_up and self.processes:
            if self.comfy_listening():
                bootstatus.update(self.boot_status, phase="comfyui_ready", now=self.pod_clock())
                return
            time.sleep(0.1)

    def comfy_listening(self) -> bool:
        """ComfyUI and the proxy in front of it both accept connections."""
        for name, port in (("comfyui", self.comfy_internal_port), ("proxy", self.comfy_port)):
            proc = self.processes.get(name)
            if proc is None or proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    pass
            except OSError:
                return False
        return True

    def comfy_exited(self) -> bool:
        proc = self.processes.get("comfyui")
        return proc is not None and proc.poll() is not None

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    def stop(self) -> None:
        """SIGTERM the agent and let it flush its queue, then end ComfyUI; SIGKILL stragglers."""
        with self._lock:
            self._stopped = True
            processes = dict(self.processes)
        agent = processes.get("agent")
        if agent is not None:
            end_process_group(agent, self.agent_grace_s)
        for name, proc in processes.items():
            if name != "agent":
                end_process_group(proc, 5.0)
        self.processes.clear()
        for handle in self._logs:
            handle.close()
        self._logs.clear()

    def kill(self) -> None:
        """A crash: every process dies at once, nothing flushes."""
        with self._lock:
            self._stopped = True
            processes = list(self.processes.values())
        for proc in processes:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
        self.processes.clear()

    def _process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _HOST_ENV_KEPT}
        env.update(self.env)
        env.setdefault("RP_POD_LEASE_S", DEFAULT_LEASE_S)
        # As start.sh does in the image: the agent ships the other processes' output too, so the
        # run's log shows ComfyUI's lines (the stand-in's, here) beside the agent's own.
        env["RP_BOOT_STATUS"] = str(self.boot_status)
        env.setdefault("MODELS_DIR", str(self.models_dir))
        env["COMFYUI_STANDIN_MODELS_DIR"] = env["MODELS_DIR"]
        env.setdefault(
            "RP_AGENT_LOG_FILES",
            ",".join(str(self.root / "logs" / f"{name}.log") for name in LOGGED_PROCESSES),
        )
        if self.api_key:
            env["RUNPOD_API_KEY"] = self.api_key
        if self.api_base_url:
            env["RUNPOD_API_BASE_URL"] = self.api_base_url
        env.update(
            {
                "RUNPOD_POD_ID": self.pod_id,
                "RUNPOD_POD_HOSTNAME": f"{self.pod_id}-local",
                "RUNPOD_GPU_COUNT": "1",
                "RUNPOD_PUBLIC_IP": "127.0.0.1",
                f"RUNPOD_TCP_PORT_{COMFYUI_PRIVATE_PORT}": str(self.comfy_port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        handle = open(self.root / "logs" / f"{name}.log", "ab")  # noqa: SIM115 (closed in stop)
        self._logs.append(handle)
        self.processes[name] = subprocess.Popen(
            guarded(argv),
            cwd=self.root / "workspace",
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: killpg reaches grandchildren too
        )


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def end_process_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored SIGTERM for %.0f s; killing it", proc.pid, grace_s)
    # Kill the group even when the leader exited: a child it left behind would otherwise linger.
    _signal_group(proc, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


def guarded(argv: Sequence[str]) -> list[str]:
    """argv wrapped in the orphan guard bound to this process."""
    return [
        sys.executable,
        "-m",
        "rp_devstack.local_pods",
        "--parent",
        str(os.getpid()),
        "--",
        *argv,
    ]


def _guard(parent_pid: int, argv: list[str]) -> int:
    """Run argv; if `parent_pid` goes away, end the whole process group (we lead it)."""
    # A Python-level handler (not SIG_IGN, which exec would pass on to the child): SIGTERM to
    # the group reaches the child directly; the guard just waits for it to finish.
    signal.signal(signal.SIGTERM, lambda *_: None)
    child = subprocess.Popen(argv)
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != parent_pid:
            os.killpg(0, signal.SIGTERM)
            try:
                return child.wait(timeout=10)
            finally:
                os.killpg(0, signal.SIGKILL)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="orphan guard for a local pod process")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    raise SystemExit(_guard(args.parent, argv))
