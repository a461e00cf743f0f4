"""Pod processes run supervised, on the devstack as in the image: an agent that dies is started
again with backoff, says so in the pod's log in R2, and uploads what came meanwhile.

`rp-agent supervise` on its own (real child processes, short delays), start.sh using it, and a
devstack local pod whose agent is SIGKILLed.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path

import psutil
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token

from rp_agent.keys import control_prefix
from rp_agent.r2 import R2Settings
from rp_agent.supervise import LAST_EXIT_ENV, RESTARTS_ENV, Supervisor, restart_note
from rp_devstack.local_pods import LocalPod
from tests.agent.helpers import read_pod_logs

from .helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

# Dies with status 3 on its first two runs, then runs until SIGTERM; notes each run's env.
FLAKY = """
import os, pathlib, signal, sys, time
notes = pathlib.Path(sys.argv[1])
with notes.open("a") as f:
    f.write(f"run restarts={os.environ.get('RP_AGENT_RESTARTS')} "
            f"last={os.environ.get('RP_AGENT_LAST_EXIT')}\\n")
if int(os.environ["RP_AGENT_RESTARTS"]) < 2:
    sys.exit(3)
def stop(*_):
    with notes.open("a") as f:
        f.write("stopped\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""


def test_a_dying_command_is_restarted_with_doubling_backoff_and_stopped_once(
    tmp_path: Path,
) -> None:
    notes = tmp_path / "notes"
    lines: list[str] = []
    supervisor = Supervisor(
        "flaky", [sys.executable, "-c", FLAKY, str(notes)], first_delay_s=0.2, say=lines.append
    )
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(supervisor.run()))
    thread.start()
    try:
        wait_until(lambda: notes.exists() and notes.read_text().count("run") == 3, "3 runs", 20)
        time.sleep(0.3)  # the third run is up and stays up
    finally:
        supervisor.stop()
        thread.join(timeout=15)
    assert result == [0]
    assert notes.read_text().splitlines() == [
        "run restarts=0 last=None",
        "run restarts=1 last=status 3",
        "run restarts=2 last=status 3",
        "stopped",  # the stop reached the command once, and nothing ran after it
    ]
    exits = [line for line in lines if "exited" in line]
    assert exits == [
        "[supervise] flaky exited with status 3; restarting in 0.2s",
        "[supervise] flaky exited with status 3; restarting in 0.4s",
    ]


def test_the_restart_note_names_the_previous_end() -> None:
    assert restart_note({RESTARTS_ENV: "0"}) is None
    assert restart_note({}) is None
    note = restart_note({RESTARTS_ENV: "2", LAST_EXIT_ENV: "signal SIGKILL"})
    assert note is not None and "restart 2" in note and "signal SIGKILL" in note


def test_the_image_supervises_with_the_same_command() -> None:
    """One home for the policy: start.sh's `supervise` is `rp-agent supervise`, as on the
    devstack (tests/docker/test_start_sh.py runs it there)."""
    script = (REPO_ROOT / "docker" / "start.sh").read_text()
    body = script[script.index("supervise() {") :]
    body = body[: body.index("\n}\n")]
    assert 'exec rp-agent supervise --name "$name" -- "$@"' in body
    for name in ("token proxy", "lease watcher", "rp-agent"):
        assert re.search(rf'supervise "?{name}"? rp-agent ', script), name


def agent_process(pod: LocalPod) -> psutil.Process | None:
    """The `rp-agent sync` process itself (below the orphan guard and the supervisor)."""
    guard = psutil.Process(pod.processes["agent"].pid)
    for proc in guard.children(recursive=True):
        try:
            if "sync" in proc.cmdline() and "supervise" not in proc.cmdline():
                return proc
        except psutil.NoSuchProcess:
            continue
    return None


def test_a_devstack_pods_killed_agent_comes_back_and_says_so(
    tmp_path: Path, r2_settings: R2Settings, r2_client
) -> None:
    env = {
        POD_TOKEN_ENV: new_pod_token(),
        "ENABLE_R2_SYNC": "true",
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
        "RP_POD_LEASE_S": "0",
    }
    pod = LocalPod("supervised", tmp_path / "pod", env)
    pod.start()
    try:
        log = tmp_path / "pod" / "logs" / "agent.log"
        wait_until(lambda: "watching" in log.read_text(), "the agent watching", 30)
        first = agent_process(pod)
        assert first is not None
        first.send_signal(signal.SIGKILL)  # the OOM killer, say

        def restarted() -> bool:
            again = agent_process(pod)
            return again is not None and again.pid != first.pid

        wait_until(restarted, "the agent started again", 15)
        assert "rp-agent exited with signal SIGKILL; restarting in 1s" in log.read_text()
        (pod.output_dir / "after_00001_.mp4").write_bytes(b"made while the agent was down")

        def uploaded() -> bool:
            listing = r2_client.list_objects_v2(Bucket=r2_settings.bucket).get("Contents", [])
            return any(
                o["Key"].endswith("after_00001_.mp4")
                for o in listing
                if not o["Key"].startswith(control_prefix())
            )

        wait_until(uploaded, "the new output uploaded", 30)
        wait_until(
            lambda: any(
                "rp-agent restarted by its supervisor" in line["msg"]
                and "signal SIGKILL" in line["msg"]
                for line in read_pod_logs(r2_client, r2_settings.bucket, "supervised")
            ),
            "the restart in the pod's log in R2",
            30,
        )
    finally:
        pod.stop()
