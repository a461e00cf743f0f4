"""Spot preemption in the emulator: RunPod takes an interruptible pod's GPU back.

What RunPod does, and so what this does: only interruptible (`podType` INTERRUPTABLE) pods are
preempted; the container is killed at once, with no grace for the processes inside; the pod stays
in the account as EXITED (not gone: `pod` still answers, podResume may bring it back when there is
capacity); billing stops and the GPU returns to stock. An on-demand pod is never preempted.

Two ways in: `preempt(state, pod_id)` (admin `POST /_emulator/pods/<id>/preempt`), and
`RandomPreemption`, which preempts each running interruptible pod at `rate_per_hour` on average
(admin `POST /_emulator/preemption {"rate_per_hour": r, "seed": s}`), for soak tests.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Sequence
from typing import Protocol

from rp_devstack.runpod_emulator.errors import EmulatorError

log = logging.getLogger(__name__)

INTERRUPTABLE = "INTERRUPTABLE"


class Pod(Protocol):
    """What preemption reads of a pod."""

    @property
    def id(self) -> str: ...
    @property
    def pod_type(self) -> str: ...
    @property
    def status(self) -> str: ...


class Account(Protocol):
    """What preemption needs of the emulated account (`state.Account` is one). A
    protocol rather than an import, so that `state` may use this module without a cycle."""

    random_preemption: RandomPreemption | None

    def get_pod(self, pod_id: str) -> Pod | None: ...
    def list_pods(self) -> Sequence[Pod]: ...
    def crash_pod(self, pod_id: str) -> None: ...


def preempt(state: Account, pod_id: str) -> None:
    """Preempt one interruptible pod; an on-demand pod is refused (RunPod never takes it)."""
    pod = state.get_pod(pod_id)
    if pod is None:
        raise EmulatorError("pod not found", status=404)
    if pod.pod_type != INTERRUPTABLE:
        raise EmulatorError(f"pod {pod_id} is on-demand; only interruptible pods are preempted")
    if pod.status != "RUNNING":
        return
    log.info("pod %s preempted (spot capacity reclaimed)", pod_id)
    state.crash_pod(pod_id)


class RandomPreemption:
    """Preempts running interruptible pods at random, `rate_per_hour` each on average."""

    def __init__(
        self,
        state: Account,
        rate_per_hour: float,
        seed: int | None = None,
        tick_s: float = 1.0,
    ) -> None:
        if not math.isfinite(rate_per_hour) or rate_per_hour < 0:
            raise ValueError(f"rate_per_hour must be a number >= 0, got {rate_per_hour!r}")
        self.state = state
        self.rate_per_hour = rate_per_hour
        self.tick_s = tick_s
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[str]:
        """One draw per running interruptible pod; the ids preempted."""
        # P(at least one event of a Poisson process in tick_s) for each pod.
        chance = 1.0 - math.exp(-self.rate_per_hour * self.tick_s / 3600.0)
        victims = [
            pod.id
            for pod in self.state.list_pods()
            if pod.pod_type == INTERRUPTABLE
            and pod.status == "RUNNING"
            and self._random.random() < chance
        ]
        for pod_id in victims:
            preempt(self.state, pod_id)
        return victims

    def start(self) -> RandomPreemption:
        self._thread = threading.Thread(target=self._loop, name="spot-preemption", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_s):
            try:
                self.tick()
            except Exception:  # a preemption racing a terminate must not end the soak knob
                log.exception("random preemption tick failed")


def set_random_rate(
    state: Account, rate_per_hour: float, seed: int | None = None
) -> RandomPreemption | None:
    """Replace the state's random preemption (0 turns it off); the new one, if any."""
    chaos = RandomPreemption(state, rate_per_hour, seed)  # validates before anything changes
    if state.random_preemption is not None:
        state.random_preemption.stop()
    state.random_preemption = chaos.start() if rate_per_hour > 0 else None
    return state.random_preemption
