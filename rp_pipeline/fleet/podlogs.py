"""The pods' own log lines (their agent's, ComfyUI's, start.sh's), shipped by each pod's agent to
R2, forwarded into the Dagster run's log by the op's main thread (the only one that talks to
Dagster), every few seconds while the op waits on its pods.

A restarted agent says so in its first line ("rp-agent restarted by its supervisor", see
`rp_agent.supervise`): the forwarder counts those lines per pod (`LogCursor.agent_restarts`, read
into each video's metadata) and says it in the run log in a line of its own."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_pipeline.integrations.r2.reports import LogCursor, forward_pod_logs

log = logging.getLogger(__name__)

# The agent ships its lines every 2 s; reading more often would mostly LIST nothing.
FORWARD_EVERY_S = 2.0
# What a restarted agent logs first (rp_agent.supervise.restart_note).
RESTART_LINE = "rp-agent restarted by its supervisor"


class _CountingLog:
    """Passes lines on to the run's log, counting the agent's restart lines."""

    def __init__(self, run_log: Any) -> None:
        self.run_log = run_log
        self.restarts = 0

    def _note(self, text: str) -> None:
        if RESTART_LINE in text:
            self.restarts += 1

    def info(self, text: str) -> None:
        self._note(text)
        self.run_log.info(text)

    def warning(self, text: str) -> None:
        self._note(text)
        self.run_log.warning(text)

    def error(self, text: str) -> None:
        self._note(text)
        self.run_log.error(text)


class PodLogForwarder:
    """Forwards each pod's new log lines to `run_log`, remembering where it stopped per pod in
    `cursors` (kept in the run's state, so the next op carries on where this one stopped)."""

    def __init__(self, r2: Any, run_log: Any, cursors: dict[str, LogCursor]) -> None:
        self.r2 = r2
        self.run_log = run_log
        self.cursors = cursors
        self.last_at = 0.0

    def poll(self, pod_ids: Iterable[str], force: bool = False) -> None:
        if not force and time.monotonic() - self.last_at < FORWARD_EVERY_S:
            return
        self.last_at = time.monotonic()
        for pod_id in list(pod_ids):
            counting = _CountingLog(self.run_log)
            try:
                cursor = forward_pod_logs(self.r2, pod_id, self.cursors.get(pod_id), counting)
            except (BotoCoreError, ClientError) as exc:  # best effort: the next poll tries again
                log.debug("could not read pod %s's log lines: %s", pod_id, exc)
                continue
            self.cursors[pod_id] = cursor
            if counting.restarts:
                cursor.agent_restarts += counting.restarts
                self.run_log.warning(
                    f"[pod {pod_id}] its agent was restarted by its supervisor "
                    f"({cursor.agent_restarts} restart(s) so far); its videos' metadata shows "
                    "agent_restarts"
                )


def agent_restarts(cursors: dict[str, LogCursor], pod_id: str) -> int:
    """How many times the pod's agent was restarted, as far as its log lines have told."""
    cursor = cursors.get(pod_id)
    return cursor.agent_restarts if cursor is not None else 0
