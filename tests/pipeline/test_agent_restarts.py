"""A pod's agent restarted by its supervisor reaches the run: the restart line shipped in the
pod's log stream is counted per pod (each video's `agent_restarts`) and said in the run log.
Real R2 (the devstack's S3 server), log objects in the agent's own format."""

from __future__ import annotations

import json
import uuid

from rp_agent.keys import log_key
from rp_agent.supervise import restart_note
from rp_devstack.stack import Devstack
from rp_pipeline.fleet.podlogs import PodLogForwarder, agent_restarts
from rp_pipeline.integrations.r2.reports import LogCursor
from tests.pipeline.helpers import r2_now


class RunLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))


def ship(r2, pod_id: str, seq: int, *messages: str) -> None:
    body = "\n".join(
        json.dumps({"t": 0, "src": "agent", "level": "INFO", "msg": m}) for m in messages
    )
    r2.put_bytes(log_key(pod_id, seq, r2.prefix), body.encode(), "application/x-ndjson")


def test_restart_lines_are_counted_per_pod_and_said_once_each(
    devstack: Devstack, pipeline_env: dict[str, str]
) -> None:
    r2 = r2_now()
    restarted, steady = (f"pod{uuid.uuid4().hex[:8]}" for _ in range(2))
    note = restart_note({"RP_AGENT_RESTARTS": "1", "RP_AGENT_LAST_EXIT": "signal SIGKILL"})
    assert note is not None
    ship(r2, restarted, 1, "watching /workspace/ComfyUI/output", "uploaded clip_00001_.mp4")
    ship(r2, restarted, 2, note)
    ship(r2, steady, 1, "watching /workspace/ComfyUI/output")
    cursors: dict[str, LogCursor] = {}
    run_log = RunLog()
    forwarder = PodLogForwarder(r2, run_log, cursors)
    forwarder.poll([restarted, steady], force=True)
    assert (agent_restarts(cursors, restarted), agent_restarts(cursors, steady)) == (1, 0)
    # Read again: nothing new, no double count; a second restart adds one.
    forwarder.poll([restarted, steady], force=True)
    assert agent_restarts(cursors, restarted) == 1
    ship(r2, restarted, 3, note.replace("restart 1", "restart 2"))
    forwarder.poll([restarted], force=True)
    assert agent_restarts(cursors, restarted) == 2
    said = [text for _, text in run_log.lines if "its agent was restarted" in text]
    assert said == [
        f"[pod {restarted}] its agent was restarted by its supervisor (1 restart(s) so far); "
        "its videos' metadata shows agent_restarts",
        f"[pod {restarted}] its agent was restarted by its supervisor (2 restart(s) so far); "
        "its videos' metadata shows agent_restarts",
    ]
    # The pod's own line reaches the run too, as shipped.
    assert any(note in text for _, text in run_log.lines)
    assert agent_restarts(cursors, "never-seen") == 0
