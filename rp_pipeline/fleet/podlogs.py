"""The pods' own log lines (their agent's, ComfyUI's, start.sh's), shipped by each pod's agent to
R2, forwarded into the Dagster run's log by the op's main thread (the only one that talks to
Dagster), every few seconds while the op waits on its pods."""

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
            try:
                self.cursors[pod_id] = forward_pod_logs(
                    self.r2, pod_id, self.cursors.get(pod_id), self.run_log
                )
            except (BotoCoreError, ClientError) as exc:  # best effort: the next poll tries again
                log.debug("could not read pod %s's log lines: %s", pod_id, exc)
