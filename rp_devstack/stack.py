"""The whole offline world in one object: local S3, the RunPod emulator, a standalone ComfyUI.

`Devstack(state_dir).start()` brings up
- LocalS3 (moto server) with the bucket `devstack-outputs`,
- the RunPod emulator with network volume `devstack-volume` (EU-RO-1) and the RunPod secrets
  `R2_ACCESS_KEY_ID` / `R2_SECRET_ACCESS_KEY` (so pod env can say `{{ RUNPOD_SECRET_R2_... }}`),
- a ComfyUI stand-in outside any pod (`COMFYUI_STANDALONE_URL`, for client tests),
and `.env` holds the eight connection variables (RunPod, R2, ComfyUI) pointing at them.
`.stop()` ends all of it, pods included; it also runs at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import subprocess
from pathlib import Path

from rp_devstack.local_pods import ComfyCommand, end_process_group, guarded, standin_command
from rp_devstack.ports import free_port, wait_for_port
from rp_devstack.runpod_emulator import DEFAULT_API_KEY, RunPodEmulator
from rp_devstack.s3 import LocalS3

log = logging.getLogger(__name__)

BUCKET = "devstack-outputs"
NETWORK_VOLUME_ID = "devstack-volume"
NETWORK_VOLUME_DATACENTER = "EU-RO-1"
ENV_NAMES = (
    "RUNPOD_API_KEY",
    "RUNPOD_API_BASE_URL",
    "RUNPOD_NETWORK_VOLUME_ID",
    "R2_ENDPOINT",
    "R2_BUCKET",
    "R2_ACCESS_KEY_ID",
    "R2_SECRET_ACCESS_KEY",
    "COMFYUI_STANDALONE_URL",
)


class Devstack:
    def __init__(
        self,
        state_dir: str | Path,
        *,
        boot_delay_s: float = 1.0,
        comfy_command: ComfyCommand = standin_command,
        agent_grace_s: float = 15.0,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.boot_delay_s = boot_delay_s
        self.comfy_command = comfy_command
        self.agent_grace_s = agent_grace_s
        self.s3: LocalS3 | None = None
        self._emulator: RunPodEmulator | None = None
        self._standin: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}

    @property
    def emulator(self) -> RunPodEmulator:
        if self._emulator is None:
            raise RuntimeError("the devstack is not started")
        return self._emulator

    def start(self) -> Devstack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            self._start_all()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_all(self) -> None:
        self.s3 = LocalS3().start(log_path=str(self.state_dir / "s3.log"))
        r2 = self.s3.create_bucket(BUCKET)
        emulator = RunPodEmulator(
            self.state_dir / "runpod",
            DEFAULT_API_KEY,
            boot_delay_s=self.boot_delay_s,
            secrets_store={
                "R2_ACCESS_KEY_ID": r2.access_key_id,
                "R2_SECRET_ACCESS_KEY": r2.secret_access_key,
            },
            comfy_command=self.comfy_command,
            agent_grace_s=self.agent_grace_s,
        )
        self._emulator = emulator.start()
        emulator.add_network_volume(
            NETWORK_VOLUME_ID, "devstack-volume", NETWORK_VOLUME_DATACENTER, size_gb=100
        )
        standin_url = self._start_standalone_comfyui()
        self.env = {
            "RUNPOD_API_KEY": emulator.api_key,
            "RUNPOD_API_BASE_URL": emulator.base_url,
            "RUNPOD_NETWORK_VOLUME_ID": NETWORK_VOLUME_ID,
            "R2_ENDPOINT": r2.endpoint,
            "R2_BUCKET": r2.bucket,
            "R2_ACCESS_KEY_ID": r2.access_key_id,
            "R2_SECRET_ACCESS_KEY": r2.secret_access_key,
            "COMFYUI_STANDALONE_URL": standin_url,
        }
        log.info("devstack up in %s", self.state_dir)

    def _start_standalone_comfyui(self) -> str:
        port = free_port()
        root = self.state_dir / "comfyui-standalone"
        output, inputs = root / "output", root / "input"
        output.mkdir(parents=True, exist_ok=True)
        inputs.mkdir(parents=True, exist_ok=True)
        with open(root / "comfyui.log", "ab") as log_file:
            self._standin = subprocess.Popen(
                guarded(self.comfy_command(port, output, inputs, {})),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for_port(port, timeout=60)
        return f"http://127.0.0.1:{port}"

    def write_env_file(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path else self.state_dir / "env"
        lines = [f"export {name}={shlex.quote(self.env[name])}" for name in ENV_NAMES]
        target.write_text("\n".join(lines) + "\n")
        target.chmod(0o600)
        return target

    def use_in_this_process(self, dagster_home: Path) -> Path:
        """Point this process's Dagster code at the stack, as `make dev` does: the stack's
        variables and RP_ENV=devstack in os.environ, and DAGSTER_HOME a new instance directory
        (telemetry off). Returns that directory."""
        os.environ.update(self.env)
        os.environ["RP_ENV"] = "devstack"
        dagster_home.mkdir(parents=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(dagster_home)
        return dagster_home

    def pids(self) -> list[int]:
        """Every process this devstack started (S3, stand-in, pods' processes)."""
        pids = [p.pid for p in (self.s3.process if self.s3 else None, self._standin) if p]
        if self._emulator is not None:
            pids += [pid for pod in self._emulator.pods() for pid in pod["pids"]]
        return pids

    def stop(self) -> None:
        """End everything; safe to call more than once."""
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None
        if self._standin is not None:
            end_process_group(self._standin, 5.0)
            self._standin = None
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None


__all__ = ["BUCKET", "ENV_NAMES", "NETWORK_VOLUME_ID", "Devstack"]
