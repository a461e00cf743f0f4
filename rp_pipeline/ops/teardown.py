"""Terminating a pod for sure: a second SIGTERM/SIGINT cannot cut the terminate call short."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from rp_pipeline.ops.state import PodInfo

log = logging.getLogger(__name__)

hold_interrupts: Any
try:  # Dagster's guard: a second SIGTERM/SIGINT is held while the terminate call is in flight
    from dagster._utils.interrupts import capture_interrupts as hold_interrupts
except ImportError:  # pragma: no cover - a Dagster without it: terminate unguarded
    hold_interrupts = contextlib.nullcontext


def terminate_confirmed(client: Any, pod: PodInfo, confirm_s: float) -> None:
    """Terminate (retried and read back for at most `confirm_s`); records when our first
    terminate call was made (billing stops there) and whether RunPod confirmed it."""
    with hold_interrupts():
        if pod.terminated_at is None:
            pod.terminated_at = time.time()
        try:
            client.terminate(pod.pod_id, confirm_timeout_s=confirm_s)
        except Exception as exc:
            log.warning("terminate of pod %s unconfirmed: %s", pod.pod_id, exc)
            pod.terminate_confirmed = False
            return
    pod.terminate_confirmed = True
