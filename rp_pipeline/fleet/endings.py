"""A pod's health and its endings, for its worker: noticing it died, salvaging its prompts,
launching a replacement, and terminating it or handing it on idle to the next run."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable

from rp_pipeline.fleet.external import PodProvider, PodsClient
from rp_pipeline.fleet.harvest import (
    Located,
    head_from_receipt,
    inspect_video,
)
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.renders import receipt_for_prefix
from rp_pipeline.fleet.slots import PodSlots
from rp_pipeline.fleet.state import PodInfo
from rp_pipeline.fleet.teardown import terminate_confirmed
from rp_pipeline.fleet.warm_pods import (
    needs_of,
    release_to_idle,
)
from rp_pipeline.fleet.work import PodDied, SharedWork
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.r2.reports import landed_at
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.money.market import was_preempted

# Lines of the pod's own log quoted when it dies, in the partitions' failure.
LOG_LINES_IN_FAILURES = 5


class PodEndings:
    """The part of `PodWorker` that ends pods (mixed in; the worker holds the state)."""

    # The worker's state that these methods work on (set by PodWorker.__init__).
    work: SharedWork
    pod: PodInfo
    runpod: PodProvider
    r2: R2Resource
    client: PodsClient
    comfy: ComfyUIClient | None
    leases: LeaseKeeper
    slots: PodSlots | None
    relaunch: Callable[[PodInfo], PodInfo | None]
    in_flight: deque[str]
    left: bool
    _outage_since: float | None
    agent_silent: bool

    def _prompt_done(self) -> None:
        raise NotImplementedError

    def _check_alive(self, error: Exception | None) -> None:
        """Raise PodDied when RunPod says the pod is gone, or ComfyUI has not answered for the
        ComfyUI resource's unreachable grace while RunPod still shows the pod running."""
        assert self.comfy is not None
        try:
            pod = self.client.get(self.pod.pod_id)
        except Exception:  # RunPod API hiccup: cannot tell; the next poll decides
            return
        if pod is None:
            raise PodDied("the pod died: RunPod no longer knows it")
        if pod.is_gone:
            status = pod.status or pod.desired_status
            raise PodDied(f"the pod died: RunPod reports it {status}{self._log_tail()}")
        if error is None and self.comfy.is_ready():
            self._outage_since = None
            return
        now = time.monotonic()
        self._outage_since = self._outage_since or now
        grace = self.comfy.unreachable_grace_s
        if now - self._outage_since >= grace:
            raise PodDied(f"the pod's ComfyUI has not answered for {grace:.0f} s{self._log_tail()}")

    def _log_tail(self) -> str:
        """ "; last log lines: a | b" from RunPod, so the failure says why ComfyUI died."""
        try:
            lines = self.client.pod_logs(self.pod.pod_id, LOG_LINES_IN_FAILURES)
        except Exception:  # best effort: never hide the failure it explains
            lines = None
        if not lines:
            return ""
        return "; last log lines: " + " | ".join(line.strip()[:200] for line in lines)

    def _fail(self, key: str, reason: str) -> None:
        self.work.state.served_by.setdefault(key, self.pod.pod_id)
        self.work.emit("failed", self.pod.pod_id, partition_key=key, message=reason)

    def _fail_all(self, keys: Iterable[str], reason: str) -> None:
        for key in list(keys):
            self._fail(key, reason)

    def _replace(self, why: str) -> bool:
        """The pod died: give its prompts back; launch a replacement if no pod is left.
        True when this worker carries on with a new pod."""
        dead = self.pod
        dead.failure = why
        unfinished = self._salvage(dead, list(self.in_flight))
        self.in_flight.clear()
        self.work.say(
            dead.pod_id,
            f"{why}; {len(unfinished)} unfinished prompt(s) go back to the queue "
            f"({', '.join(unfinished) or 'none'})",
            "error",
        )
        self._terminate(dead)
        orphaned: list[str] = []
        with self.work.lock:
            self.work.todo.extendleft(reversed(unfinished))
            others = self.work.live_workers - 1
            replace = (
                others == 0
                and bool(self.work.todo)
                and self.work.replacements_left > 0
                and not self.work.stop.is_set()
            )
            if replace:
                self.work.replacements_left -= 1
            else:
                self.left = True
                self.work.live_workers -= 1
                if others == 0:
                    orphaned = list(self.work.todo)
                    self.work.todo.clear()
        if not replace:
            if orphaned:
                self._fail_all(orphaned, f"pod {dead.pod_id} died ({why}) and no pod was left")
            return False
        self.work.say(dead.pod_id, "no pod of the run is left: launching a replacement")
        new = self.relaunch(dead)
        if new is None:
            with self.work.lock:
                self.left = True
                self.work.live_workers -= 1
                orphaned = list(self.work.todo)
                self.work.todo.clear()
            self._fail_all(orphaned, f"pod {dead.pod_id} died and its replacement failed")
            return False
        self.work.emit("pod_end", dead.pod_id)
        self.pod = new
        self._outage_since = None
        self.agent_silent = False
        self.work.say(new.pod_id, f"replacement for {dead.pod_id} ready")
        return True

    def _salvage(self, dead: PodInfo, keys: list[str]) -> list[str]:
        """The dead pod's prompts that must run again. One whose video the pod's agent already
        put in R2 is collected from its receipt instead (never generated twice); each moved
        off a pod RunPod took back is marked preempted."""
        for _ in keys:
            self._prompt_done()
        state = self.work.state
        try:
            preempted = was_preempted(self.client, dead.pod_id, dead.interruptible)  # type: ignore[arg-type]
        except Exception:
            preempted = False
        rerun = []
        for key in keys:
            if preempted:
                state.preempted[key] = dead.pod_id
            try:
                receipt = (
                    receipt_for_prefix(self.r2, dead.pod_id, state.video(key).filename_prefix)
                    if self.work.settings.enable_r2_sync
                    else None
                )
            except Exception:
                receipt = None
            if receipt is None:
                rerun.append(key)
                continue
            sub = state.submitted[key]
            landed = landed_at(self.r2, dead.pod_id, receipt)
            located = Located(head_from_receipt(receipt), landed, "agent", receipt)
            record = inspect_video(
                r2=self.r2, located=located, partition_key=key, prompt_id=sub.prompt_id,
                generation_time_s=None, queue_wait_s=None,
            )  # fmt: skip
            self.work.say(dead.pod_id, f"{key}: its video reached R2 before the pod died")
            self.work.emit("video", dead.pod_id, partition_key=key, record=record)
        return rerun

    def _terminate(self, pod: PodInfo) -> None:
        if pod.terminated_at is not None and pod.terminate_confirmed:
            return
        terminate_confirmed(self.client, pod, self.work.settings.terminate_confirm_s)
        if self.work.budget is not None:
            self.work.budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
        self.leases.release(pod.pod_id)
        if self.slots is not None and pod.slot_key and pod.terminate_confirmed:
            # An unconfirmed pod keeps its slot: it may still be running.
            self.slots.free(pod.slot_key)

    def _end_pod(self) -> None:
        if self._keep_warm():
            idle_s = self.work.state.plan.idle_s
            self.work.say(self.pod.pod_id, f"idle for the next run for up to {idle_s:.0f} s")
        else:
            self._terminate(self.pod)
            state = "confirmed" if self.pod.terminate_confirmed else "UNCONFIRMED (may still bill)"
            self.work.say(self.pod.pod_id, f"terminated ({state})")
        self.work.emit("pod_end", self.pod.pod_id)

    def _keep_warm(self) -> bool:
        """Release a healthy pod to idle (RP_POD_IDLE_S > 0) instead of terminating it: its
        lease turns idle, the pod-side watcher ends it when nobody adopts it in time. This
        run's bill for it ends here, and it gives back its run slot (idle pods are counted
        against RP_MAX_PODS from RunPod's pod list and their leases instead)."""
        plan, pod = self.work.state.plan, self.pod
        if plan is None or plan.idle_s <= 0 or pod.failure or pod.terminated_at is not None:
            return False
        if self.work.stop.is_set():
            return False
        self.leases.forget(pod.pod_id)  # a late renewal would undo the release
        try:
            needs = needs_of(
                self.client, self.client.get(pod.pod_id), self.runpod.image,
                self.runpod.network_volume_id, tuple(pod.loras),
            )  # fmt: skip
            kept = release_to_idle(self.r2, pod.pod_id, self.work.state.run_id, needs, plan.idle_s)
        except Exception as exc:
            self.work.say(pod.pod_id, f"could not keep the pod warm ({exc}); terminating it")
            kept = False
        if not kept:
            return False
        pod.terminated_at, pod.terminate_confirmed, pod.kept_warm = time.time(), True, True
        if self.work.budget is not None:
            self.work.budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
        if self.slots is not None and pod.slot_key:
            self.slots.free(pod.slot_key)
        return True
