"""Terminating a pod for sure: a second SIGTERM/SIGINT cannot cut the terminate call short."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from dagster import DagsterExecutionInterruptedError

from rp_pipeline.fleet.state import PodInfo
from rp_pipeline.integrations.dagster_internals import hold_interrupts

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def remembered_interrupts() -> Iterator[Callable[[], None]]:
    """A check that re-raises a stop signal the op's loop may never have seen.

    Dagster turns SIGTERM/SIGINT into an exception raised from its signal handler, wherever the
    main thread is. Raised inside a garbage-collection callback, Python prints it and swallows
    it ("Exception ignored in ..."), and an op waiting on its pods would wait on with a stopped
    run. So the signal is also recorded here, and `check()` in the loop raises it again.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    seen = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def record(signo: int, frame: Any) -> None:
        seen.set()
        handler = previous.get(signal.Signals(signo))
        if callable(handler):
            handler(signo, frame)

    def check() -> None:
        if seen.is_set():
            raise DagsterExecutionInterruptedError()

    for sig in previous:
        signal.signal(sig, record)
    try:
        yield check
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
