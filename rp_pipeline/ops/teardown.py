"""Terminating a run's pod on every path out of an op: success, failure, cancellation."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from rp_pipeline.ops.state import BatchState

log = logging.getLogger(__name__)

hold_interrupts: Any
try:  # Dagster's guard: a second SIGTERM/SIGINT is held while the terminate call is in flight
    from dagster._utils.interrupts import capture_interrupts as hold_interrupts
except ImportError:  # pragma: no cover - a Dagster without it: terminate unguarded
    hold_interrupts = contextlib.nullcontext


def terminate_pod_now(client: Any, pod_id: str, logger: Any = log) -> float:
    """Terminate (idempotent) and return the epoch second of the terminate call."""
    with hold_interrupts():
        called_at = time.time()
        client.terminate(pod_id)
    logger.info(f"terminated pod {pod_id}")
    return called_at


@contextlib.contextmanager
def terminate_on_exit_error(client: Any, state: BatchState, logger: Any = log) -> Iterator[None]:
    """Any exception leaving the block (incl. DagsterExecutionInterruptedError when the run is
    cancelled, which is a BaseException) terminates the pod before propagating."""
    try:
        yield
    except BaseException:
        if state.pod is not None:
            logger.error(f"op failed or was interrupted; terminating pod {state.pod.pod_id}")
            try:
                terminate_pod_now(client, state.pod.pod_id, logger)
            except Exception as exc:  # the reaper and failure sensor retry; keep the first error
                logger.error(f"terminate of {state.pod.pod_id} failed: {type(exc).__name__}")
        raise
