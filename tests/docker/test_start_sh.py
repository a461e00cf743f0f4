"""docker/start.sh run for real as a process tree: a stand-in ComfyUI (main.py answering
/system_stats), a stand-in `rp-agent` on PATH, the real download_models.sh with an empty
manifest. Checks ordering, agent supervision, signal forwarding and that secrets never print.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rp_devstack.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
START = REPO_ROOT / "docker" / "start.sh"
SECRET = "r2-secret-value-should-never-print"
KEY_ID = "r2-key-id-should-never-print"

FAKE_COMFY = """
import http.server, signal, sys, pathlib
log = pathlib.Path(sys.argv[0]).parent / "events.log"
def note(line):
    with open(log, "a") as f:
        f.write(line + "\\n")
note("comfy-start " + " ".join(sys.argv[1:]))
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", port), H)
def stop(*_):
    note("comfy-stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
if "--crash" in sys.argv:
    sys.exit(7)
server.serve_forever()
"""

# First run dies at once (the supervisor must restart it); later runs wait for SIGTERM and
# "flush" before exiting, as the real agent does.
FAKE_AGENT = """#!/usr/bin/env bash
log="{events}"
runs_file="{state}/runs"
runs=$(( $(cat "$runs_file" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$runs_file"
echo "agent-start $* key=${{R2_ACCESS_KEY_ID:+yes}}" >> "$log"
if [ "$runs" -eq 1 ]; then exit 3; fi
trap 'echo agent-flushed >> "$log"; exit 0' TERM
while true; do sleep 0.1; done
"""


@dataclass
class Pod:
    process: subprocess.Popen[str]
    events: Path
    port: int
    output_dir: Path

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        out = self.process.stdout.read() if self.process.poll() is not None else ""  # type: ignore[union-attr]
        pytest.fail(f"{what} did not happen; events={self.event_lines()} output={out}")

    def comfy_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/system_stats", timeout=1):
                return True
        except OSError:
            return False


@pytest.fixture
def start_pod(tmp_path: Path) -> Iterator[Callable[..., Pod]]:
    started: list[subprocess.Popen[str]] = []

    def start(extra_env: dict[str, str] | None = None, comfy_args: str = "") -> Pod:
        comfy_dir = tmp_path / "ComfyUI-code"
        comfy_dir.mkdir(exist_ok=True)
        (comfy_dir / "main.py").write_text(FAKE_COMFY)
        events = comfy_dir / "events.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        agent = bin_dir / "rp-agent"
        agent.write_text(FAKE_AGENT.format(events=events, state=tmp_path))
        agent.chmod(0o755)
        manifest = tmp_path / "manifest.txt"
        manifest.write_text("")
        port = free_port()
        data_dir = tmp_path / "data"
        env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "COMFYUI_DIR": str(comfy_dir),
            "COMFYUI_DATA_DIR": str(data_dir),
            "COMFYUI_PORT": str(port),
            "COMFYUI_ARGS": comfy_args,
            "RP_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
            "MODELS_MANIFEST": str(manifest),
            "ENABLE_R2_SYNC": "true",
            "R2_ENDPOINT": "http://127.0.0.1:9/acct-id",
            "R2_BUCKET": "runpod",
            "R2_ACCESS_KEY_ID": KEY_ID,
            "R2_SECRET_ACCESS_KEY": SECRET,
            **(extra_env or {}),
        }
        process = subprocess.Popen(
            ["bash", str(START)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(process)
        return Pod(process, events, port, data_dir / "output")

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def session_alive(pod: Pod) -> bool:
    try:
        os.killpg(pod.process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pod: Pod, sig: int = signal.SIGTERM) -> tuple[int, str]:
    pod.process.send_signal(sig)
    out, _ = pod.process.communicate(timeout=60)
    return pod.process.returncode, out


def test_sigterm_stops_comfyui_then_flushes_the_restarted_agent(start_pod) -> None:
    pod = start_pod()
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")
    # The first agent run exits 3; the supervisor must start a second one.
    pod.wait_for(
        lambda: sum(line.startswith("agent-start") for line in pod.event_lines()) == 2,
        "rp-agent restart",
    )

    status, out = stop(pod)

    assert status == 0, out
    events = pod.event_lines()
    assert events.index("comfy-stopped") < events.index("agent-flushed")
    agent_starts = [line for line in events if line.startswith("agent-start")]
    assert all(
        line.startswith(f"agent-start sync --watch-dir {pod.output_dir} --state-dir ")
        and line.endswith("key=yes")
        for line in agent_starts
    ), agent_starts
    assert "rp-agent exited with status 3; restarting in 1s" in out
    assert "R2_SECRET_ACCESS_KEY: set" in out
    assert "R2_ACCESS_KEY_ID: set" in out
    assert "CIVITAI_API_KEY: not set" in out
    for value in (SECRET, KEY_ID, "acct-id"):
        assert value not in out


def test_models_are_in_place_before_comfyui_starts(start_pod) -> None:
    pod = start_pod()
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    _, out = stop(pod, signal.SIGINT)

    assert out.index("[models] all selected models present") < out.index("ComfyUI starting")
    [comfy_start] = [line for line in pod.event_lines() if line.startswith("comfy-start")]
    assert f"--output-directory {pod.output_dir}" in comfy_start
    assert "--extra-model-paths-config" in comfy_start


def test_no_agent_without_enable_r2_sync(start_pod) -> None:
    pod = start_pod({"ENABLE_R2_SYNC": "false"})
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    status, out = stop(pod)

    assert status == 0
    assert not [line for line in pod.event_lines() if line.startswith("agent-start")]
    assert "ENABLE_R2_SYNC is not true" in out


def test_missing_r2_settings_are_named_and_agent_not_started(start_pod) -> None:
    pod = start_pod({"R2_SECRET_ACCESS_KEY": "", "R2_BUCKET": ""})
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    _, out = stop(pod)

    assert "R2_BUCKET R2_SECRET_ACCESS_KEY not set: rp-agent NOT started" in out
    assert not [line for line in pod.event_lines() if line.startswith("agent-start")]


def test_comfyui_crash_flushes_agent_and_exits_nonzero(start_pod) -> None:
    pod = start_pod(comfy_args="--crash")

    out, _ = pod.process.communicate(timeout=60)

    assert pod.process.returncode == 7, out
    assert "ComfyUI exited with status 7" in out
    # The agent supervisor gets a clean stop (the agent's flush) rather than being orphaned.
    assert "stopping rp-agent" in out


def test_output_dir_is_per_pod_on_runpod(start_pod) -> None:
    pod = start_pod({"RUNPOD_POD_ID": "pod123abc"})
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    stop(pod)

    per_pod = pod.output_dir / "pod123abc"
    events = pod.event_lines()
    [comfy_start] = [line for line in events if line.startswith("comfy-start")]
    assert f"--output-directory {per_pod} " in comfy_start
    assert any(line.startswith(f"agent-start sync --watch-dir {per_pod} ") for line in events)


def test_sigterm_during_model_download_leaves_a_resumable_partial(
    start_pod, model_hub, tmp_path: Path
) -> None:
    size = 4 * 1024 * 1024
    model_hub.add("/Org/repo/resolve/main/big.safetensors", b"x" * size, chunk_delay=0.05)
    manifest = tmp_path / "models-manifest.txt"
    manifest.write_text("wan720p any Org/repo big.safetensors diffusion_models 3 -\n")
    pod = start_pod(
        {"WAN_720P": "true", "HF_ENDPOINT": model_hub.base_url, "MODELS_MANIFEST": str(manifest)}
    )
    part = tmp_path / "data" / "models" / "diffusion_models" / "big.safetensors.part"
    pod.wait_for(lambda: part.exists() and part.stat().st_size > 0, "download in progress")

    status, out = stop(pod)

    assert status == 0, out
    assert not pod.comfy_answers()  # ComfyUI never started: models come first
    assert 0 < part.stat().st_size < size  # kept for the next start to resume
    assert not part.with_suffix("").exists()
    assert not session_alive(pod)  # curl was stopped too, nothing orphaned
