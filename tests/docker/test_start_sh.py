"""docker/start.sh run for real as a process tree: a stand-in ComfyUI (main.py answering
/system_stats), a stand-in `rp-agent` on PATH whose `proxy` and `supervise` commands are the
real ones, the real download_models.sh with an empty manifest. Checks ordering, agent
supervision, signal forwarding, that ComfyUI is reachable only through the proxy with the pod's token, and that
secrets never print.

A stop can reach a pod at any moment, so it is sent in every phase (model download, the agent's
restart backoff, the agent running) and each time start.sh must exit cleanly within the stop
grace period, leaving no process behind. The script is started with default signal dispositions
whatever the suite inherited: CI starts the suite from a background shell, which ignores SIGINT,
and a shell cannot trap a signal that was ignored when it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rp_devstack.ports import free_port
from rp_pipeline.integrations.runpod.token import new_pod_token

REPO_ROOT = Path(__file__).resolve().parents[2]
START = REPO_ROOT / "docker" / "start.sh"
# A container stop waits this long before SIGKILL; the stand-ins flush at once, so a start.sh
# still running after it has hung (a lost signal, or an orphan holding stdout open).
STOP_GRACE_S = 30
SECRET = "r2-secret-value-should-never-print"
KEY_ID = "r2-key-id-should-never-print"
TOKEN = new_pod_token()
RUNPOD_KEY = "pod-scoped-key-should-never-print"

FAKE_COMFY = """
import http.server, signal, sys, pathlib
log = pathlib.Path(sys.argv[0]).parent / "events.log"
def note(line):
    with open(log, "a") as f:
        f.write(line + "\\n")
note("comfy-start " + " ".join(sys.argv[1:]))
print("comfy listening", flush=True)
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

# By default the first run dies at once (the supervisor must restart it); later runs wait for
# SIGTERM and "flush" before exiting, as the real agent does. FAKE_AGENT_CRASHES says how many
# runs die ("always": every one).
FAKE_AGENT = """#!/usr/bin/env bash
log="{events}"
case "$1" in
    proxy | boot-phase | supervise) exec "{python}" -m rp_agent.cli "$@" ;;
    lease-watch)
        echo "lease-start $* pod=$RUNPOD_POD_ID" >> "$log"
        trap 'echo lease-stopped >> "$log"; exit 0' TERM
        while true; do sleep 0.1; done ;;
esac
runs_file="{state}/runs"
runs=$(( $(cat "$runs_file" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$runs_file"
echo "agent-start $* logs=${{RP_AGENT_LOG_FILES:-}} key=${{R2_ACCESS_KEY_ID:+yes}}" >> "$log"
crashes="${{FAKE_AGENT_CRASHES:-1}}"
if [ "$crashes" = always ] || [ "$runs" -le "$crashes" ]; then
    echo "agent-exit 3" >> "$log"
    exit 3
fi
trap 'echo agent-flushed >> "$log"; exit 0' TERM
while true; do sleep 0.1; done
"""


def default_signals_own_session() -> None:
    """preexec_fn: a session of its own (so the test can find and kill all of it), and SIGINT,
    SIGQUIT, SIGTERM back to their defaults: a suite started from a background shell inherits
    them ignored, exec passes "ignored" on, and bash could then never trap them."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def processes_marked(marker: str) -> list[str]:
    """Live processes whose environment carries `marker`: everything start.sh started, even in
    sessions of its own (the download), or reparented after their parent died."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {command}")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


@dataclass
class Pod:
    process: subprocess.Popen[str]
    events: Path
    port: int
    internal_port: int
    output_dir: Path
    marker: str

    def leftover_processes(self) -> list[str]:
        return processes_marked(self.marker)

    def kill_everything(self) -> None:
        for line in self.leftover_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)

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

    def comfy_answers(self, token: str | None = TOKEN) -> bool:
        """ComfyUI answers through the public port (the proxy) to a holder of `token`."""
        return self.public_status(token) == 200

    def public_status(self, token: str | None) -> int | None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/system_stats")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=1) as reply:
                return reply.status
        except urllib.error.HTTPError as error:
            return error.code
        except OSError:
            return None


@pytest.fixture
def start_pod(tmp_path: Path) -> Iterator[Callable[..., Pod]]:
    started: list[Pod] = []

    def start(extra_env: dict[str, str] | None = None, comfy_args: str = "") -> Pod:
        comfy_dir = tmp_path / "ComfyUI-code"
        comfy_dir.mkdir(exist_ok=True)
        (comfy_dir / "main.py").write_text(FAKE_COMFY)
        events = comfy_dir / "events.log"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        agent = bin_dir / "rp-agent"
        agent.write_text(FAKE_AGENT.format(events=events, state=tmp_path, python=sys.executable))
        agent.chmod(0o755)
        manifest = tmp_path / "manifest.txt"
        manifest.write_text("")
        port = free_port()
        internal_port = free_port()
        data_dir = tmp_path / "data"
        marker = f"RP_START_SH_TEST={uuid.uuid4().hex}"
        env = {
            marker.split("=")[0]: marker.split("=")[1],
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            # The session's temp dir: the suite's leak check sees anything start.sh leaves.
            "TMPDIR": tempfile.gettempdir(),
            "HOME": str(tmp_path),
            "COMFYUI_DIR": str(comfy_dir),
            "COMFYUI_DATA_DIR": str(data_dir),
            "COMFYUI_PORT": str(port),
            "COMFYUI_INTERNAL_PORT": str(internal_port),
            "RP_POD_TOKEN": TOKEN,
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
            preexec_fn=default_signals_own_session,
        )
        pod = Pod(process, events, port, internal_port, data_dir / "output", marker)
        started.append(pod)
        return pod

    try:
        yield start
    finally:
        for pod in started:
            pod.kill_everything()
            pod.process.communicate()


def session_alive(pod: Pod) -> bool:
    try:
        os.killpg(pod.process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pod: Pod, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Sends the stop and returns (status, output) once start.sh has exited and its stdout is
    closed, failing if that takes longer than the grace period or leaves any process behind."""
    pod.process.send_signal(sig)
    try:
        out, _ = pod.process.communicate(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f"start.sh not done {STOP_GRACE_S}s after {signal.Signals(sig).name}: "
            f"exited={pod.process.poll() is not None} processes={pod.leftover_processes()} "
            f"events={pod.event_lines()} output={e.output!r}"
        )
    assert pod.leftover_processes() == [], out
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
    assert "RP_POD_TOKEN: set" in out
    for value in (SECRET, KEY_ID, "acct-id", TOKEN):
        assert value not in out


def test_start_and_comfyui_output_go_to_the_files_the_agent_ships(
    start_pod, tmp_path: Path
) -> None:
    pod = start_pod({"FAKE_AGENT_CRASHES": "0"})
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")
    logs = tmp_path / "agent-state" / "logs"
    comfy_log, start_log = logs / "comfyui.log", logs / "start.log"
    pod.wait_for(
        lambda: comfy_log.exists() and "comfy listening" in comfy_log.read_text(),
        "ComfyUI's output in comfyui.log",
    )
    [agent_start] = [line for line in pod.event_lines() if line.startswith("agent-start")]
    assert f" logs={start_log},{comfy_log} " in agent_start

    status, out = stop(pod)

    assert status == 0, out
    text = start_log.read_text()
    assert "[start] rp-agent watching" in text and "[start] stopping ComfyUI" in text
    assert "[start] stopped" in text and "comfy listening" not in text
    # The container's own log (RunPod's log view) still gets both.
    assert "[start] stopped" in out and "comfy listening" in out
    for value in (SECRET, KEY_ID, TOKEN):
        assert value not in text


def test_models_are_in_place_before_comfyui_starts(start_pod) -> None:
    pod = start_pod()
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    status, out = stop(pod, signal.SIGINT)

    assert status == 0, out
    assert "SIGINT received" in out
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


def bytes_recorded(record: Path) -> int:
    """Bytes a part file's record says are written (0 while there is no readable record)."""
    try:
        return sum(done for _start, _end, done in json.loads(record.read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def test_sigterm_during_model_download_leaves_a_resumable_partial(
    start_pod, model_hub, tmp_path: Path
) -> None:
    # Slow enough (about 13 s) that the stop surely lands while it is in flight.
    size = 16 * 1024 * 1024
    model_hub.add("/Org/repo/resolve/main/big.safetensors", b"x" * size, chunk_delay=0.05)
    manifest = tmp_path / "models-manifest.txt"
    manifest.write_text("wan720p any Org/repo big.safetensors diffusion_models 3 -\n")
    pod = start_pod(
        {
            "WAN_720P": "true",
            "HF_ENDPOINT": model_hub.base_url,
            "MODELS_MANIFEST": str(manifest),
            "FAKE_AGENT_CRASHES": "0",
        }
    )
    part = tmp_path / "data" / "models" / "diffusion_models" / "big.safetensors.part"
    record = part.with_name(part.name + ".json")
    pod.wait_for(lambda: bytes_recorded(record) > 0, "download in progress")
    pod.wait_for(lambda: "agent-start" in " ".join(pod.event_lines()), "rp-agent running")

    status, out = stop(pod)  # also fails if curl (in a session of its own) outlived the stop

    assert status == 0, out
    assert not pod.comfy_answers()  # ComfyUI never started: models come first
    # Kept for the next start to resume: the part (sized up front) and the record of its bytes.
    assert part.stat().st_size == size
    assert 0 < bytes_recorded(record) < size
    assert not part.with_suffix("").exists()
    assert "agent-flushed" in pod.event_lines()  # the agent got its flush, not a kill
    assert not session_alive(pod)


def test_sigterm_during_the_agent_restart_backoff(start_pod, tmp_path: Path) -> None:
    """The agent dies at every start: the supervisor backs off 1, 2, 4, 8 s. The stop lands in
    the 8 s backoff (seen in start.log as it begins): nothing is started after it."""
    pod = start_pod({"FAKE_AGENT_CRASHES": "always"})
    start_log = tmp_path / "agent-state" / "logs" / "start.log"
    pod.wait_for(
        lambda: start_log.exists() and "restarting in 8s" in start_log.read_text(),
        "the agent's 8 s restart backoff",
    )
    starts_before = sum(line.startswith("agent-start") for line in pod.event_lines())

    status, out = stop(pod)

    assert status == 0, out
    assert "rp-agent exited with status 3; restarting in 1s" in out
    assert "rp-agent exited with status 3; restarting in 2s" in out
    events = pod.event_lines()
    assert "comfy-stopped" in events
    # The backoff was still running: no agent was started after the stop.
    assert sum(line.startswith("agent-start") for line in events) == starts_before == 4


def test_comfyui_listens_on_loopback_behind_the_token_proxy(start_pod) -> None:
    pod = start_pod()
    pod.wait_for(pod.comfy_answers, "ComfyUI answering through the proxy")

    assert pod.public_status(None) == 401
    assert pod.public_status(new_pod_token()) == 401
    [comfy_start] = [line for line in pod.event_lines() if line.startswith("comfy-start")]
    assert f"--listen 127.0.0.1 --port {pod.internal_port} " in comfy_start

    status, out = stop(pod)  # also fails if the proxy outlived the stop

    assert status == 0, out
    assert out.index("stopping ComfyUI") < out.index("stopping the token proxy")
    assert out.index("stopping the token proxy") < out.index("stopping rp-agent")
    assert TOKEN not in out


def test_a_pod_without_token_refuses_everyone(start_pod) -> None:
    pod = start_pod({"RP_POD_TOKEN": ""})
    pod.wait_for(lambda: pod.public_status(None) == 503, "the proxy refusing")
    assert pod.public_status("anything-at-all-long-enough") == 503

    _, out = stop(pod)

    assert "RP_POD_TOKEN not set: the ComfyUI port refuses every request" in out
    assert any(line.startswith("comfy-start") for line in pod.event_lines())


def test_lease_watcher_runs_when_the_pod_can_end_itself(start_pod) -> None:
    pod = start_pod({"RUNPOD_POD_ID": "pod123abc", "RUNPOD_API_KEY": RUNPOD_KEY})
    pod.wait_for(lambda: "lease-start lease-watch pod=pod123abc" in pod.event_lines(), "watcher")

    status, out = stop(pod)

    assert status == 0, out
    assert "lease-stopped" in pod.event_lines()
    assert "RP_POD_LEASE_S=300" in out  # the image's default lease
    assert "RUNPOD_API_KEY: set" in out and RUNPOD_KEY not in out


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"RP_POD_LEASE_S": "0"}, "RP_POD_LEASE_S=0: no lease, this pod runs until it is stopped"),
        ({"RP_POD_LEASE_S": "5m"}, "RP_POD_LEASE_S=5m is not whole seconds"),
        (
            {"RUNPOD_POD_ID": "", "RUNPOD_API_KEY": ""},
            "RUNPOD_POD_ID RUNPOD_API_KEY not set: lease watcher NOT started",
        ),
    ],
)
def test_lease_watcher_not_started_says_why(start_pod, env: dict[str, str], reason: str) -> None:
    pod = start_pod({"RUNPOD_POD_ID": "pod123abc", "RUNPOD_API_KEY": RUNPOD_KEY, **env})
    pod.wait_for(pod.comfy_answers, "ComfyUI answering")

    _, out = stop(pod)

    assert reason in out
    assert not [line for line in pod.event_lines() if line.startswith("lease-start")]
