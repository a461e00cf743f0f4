"""The run's work of pods, worked side by side with threads inside each op of the chain.

Why threads inside the ops rather than one dynamic branch per pod: the code location runs the
in-process executor (and `materialize` always does), which runs dynamic branches one after the
other, so k pods would boot and work in turn. Threads make the pods work side by side however
the run is started, and keep the op chain launch -> ready -> submit -> harvest -> terminate
readable in the run view.

Work is pulled from ONE queue of partitions (`PodWorker.take`): each pod keeps at most one
prompt queued behind the running one (so its GPU never idles between videos) and takes the next
partition when its ComfyUI queue drains below that, so a faster GPU does more videos and a pod
that dies hands its unfinished prompts back to the queue for the others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rp_pipeline.fleet.collect import VideoCollecting
from rp_pipeline.fleet.endings import PodEndings
from rp_pipeline.fleet.harvest import (
    is_video_output,
)
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.renders import note_submitted
from rp_pipeline.fleet.slots import PodSlots
from rp_pipeline.fleet.start_images import ensure_start_image
from rp_pipeline.fleet.state import PodInfo
from rp_pipeline.fleet.work import PROMPTS_PER_POD, PodDied, Progress, SharedWork, comfy_client
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.errors import (
    ComfyUIError,
    ComfyUITimeout,
    ComfyUIUnavailable,
    PromptExecutionError,
    PromptValidationError,
)
from rp_pipeline.integrations.comfyui.results import PromptResult
from rp_pipeline.money.budget import BudgetExceeded

# Seconds a worker's read of RunPod is retried before it moves on.
STATUS_READ_PATIENCE_S = 5.0


class PodWorker(PodEndings, VideoCollecting, threading.Thread):
    """Drives one pod: keeps its ComfyUI queue fed from the shared queue, follows each prompt with
    the client that queued it, collects each video from R2, terminates the pod when done."""

    def __init__(
        self,
        work: SharedWork,
        pod: PodInfo,
        *,
        runpod: Any,
        comfyui: Any,
        r2: Any,
        leases: LeaseKeeper,
        slots: PodSlots | None,
        relaunch: Callable[[PodInfo], PodInfo | None],
    ) -> None:
        super().__init__(name=f"pod-{pod.pod_id}", daemon=True)
        self.work = work
        self.pod = pod
        self.runpod = runpod
        self.comfyui = comfyui
        self.r2 = r2
        self.leases = leases
        self.slots = slots
        self.relaunch = relaunch
        # One per thread (sessions are not shared). A status read that fails is retried only
        # briefly: the worker's next poll decides, it must not stall on an API outage.
        self.client = runpod.get_client().with_read_patience(STATUS_READ_PATIENCE_S)
        self.in_flight: deque[str] = deque(
            key
            for key, sub in work.state.submitted.items()
            if sub.pod_id == pod.pod_id
            and key not in work.state.records
            and key not in work.state.failures
        )
        self.comfy: ComfyUIClient | None = None
        self._outage_since: float | None = None
        self.left = False
        self.agent_silent = False

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        try:
            while True:
                try:
                    self._serve()
                    break
                except PodDied as exc:
                    if not self._replace(str(exc)):
                        break
        except BaseException as exc:
            self.work.say(self.pod.pod_id, f"worker crashed: {type(exc).__name__}: {exc}", "error")
            self._fail_all(self.in_flight, f"pod worker crashed: {type(exc).__name__}: {exc}")
            self._leave()
        finally:
            self._end_pod()

    def _leave(self, only_if_idle: bool = False) -> bool:
        """Stop counting as a live worker (once); with only_if_idle, only when the shared
        queue is empty, checked under the same lock as requeues so none is missed."""
        with self.work.lock:
            if self.left or (only_if_idle and self.work.todo):
                return self.left
            self.left = True
            self.work.live_workers -= 1
            return True

    def _serve(self) -> None:
        self.comfy = comfy_client(self.comfyui, self.client, self.pod)
        while not self.work.stop.is_set():
            self._top_up()
            if not self.in_flight:
                if self._leave(only_if_idle=True):
                    return
                continue
            key = self.in_flight[0]
            try:
                self._produce(key)
            except PodDied:
                raise
            except Exception as exc:  # ANY failure on one video fails that partition only
                self._fail(key, f"{type(exc).__name__}: {exc}")
            if self.in_flight and self.in_flight[0] == key:
                self.in_flight.popleft()
                self._prompt_done()
        self._leave()

    def _prompt_done(self) -> None:
        if self.work.budget is not None:
            self.work.budget.finish_prompt()

    def _budget_allows(self, key: str) -> bool:
        """Count the prompt against the run's budget; once the cap is reached, fail it and
        every prompt still queued with the budget's reason (no pod takes them any more)."""
        if self.work.budget is None:
            return True
        try:
            self.work.budget.start_prompt(self.pod.cost_per_hr)
            return True
        except BudgetExceeded as exc:
            with self.work.lock:
                rest = [key, *self.work.todo]
                self.work.todo.clear()
            self._fail_all(rest, str(exc))
            return False

    def _top_up(self) -> None:
        """Queue prompts until PROMPTS_PER_POD are on the pod (or the shared queue is empty)."""
        while len(self.in_flight) < PROMPTS_PER_POD and not self.work.stop.is_set():
            with self.work.lock:
                if not self.work.todo:
                    return
                key = self.work.todo.popleft()
            if not self._budget_allows(key):
                return
            try:
                self._submit(key)
            except PodDied:
                self._prompt_done()
                with self.work.lock:
                    self.work.todo.appendleft(key)
                raise
            except Exception as exc:
                self._prompt_done()
                self._fail(key, f"ComfyUI refused the prompt: {type(exc).__name__}: {exc}")

    def _submit(self, key: str) -> None:
        assert self.comfy is not None
        video = self.work.state.video(key)
        while True:
            try:
                sub = self.comfy.submit(ensure_start_image(self.comfy, self.r2, video))
                break
            except ComfyUIUnavailable as exc:
                self._check_alive(exc)  # PodDied once gone or past the unreachable grace
                time.sleep(2.0)
        note_submitted(self.work.state, self.r2, self.pod, key, sub)
        self.in_flight.append(key)
        self.work.say(self.pod.pod_id, f"queued {key} as prompt {sub.prompt_id}")

    def _produce(self, key: str) -> None:
        result = self._follow(key)
        if result is None:
            return
        self.in_flight.popleft()
        self._prompt_done()
        died: PodDied | None = None
        try:
            self._top_up()  # the next prompt is queued before we spend time on R2
        except PodDied as exc:
            died = exc  # this video is finished: collect it first
        videos = [out for out in result.outputs if is_video_output(out)]
        if result.status != "success" or not videos:
            self._fail(key, f"ComfyUI status {result.status}, {len(videos)} video output(s)")
            return
        try:
            record = self._collect(key, result, videos[0])
            self.work.emit("video", self.pod.pod_id, partition_key=key, record=record)
        except Exception as exc:
            self._fail(key, f"{type(exc).__name__}: {exc}")
        if died is not None:
            raise died

    # ------------------------------------------------------------------ one prompt

    def _follow(self, key: str) -> PromptResult | None:
        """The prompt's result, or None when it failed (recorded) or was interrupted at its
        deadline; raises PodDied when the pod is gone (its prompts go back to the queue)."""
        assert self.comfy is not None
        settings = self.work.settings
        sub = self.work.state.submitted[key]
        deadline = time.monotonic() + settings.prompt_deadline_s
        progress = Progress(self.work, self.pod.pod_id, key)
        while not self.work.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._interrupt(key, sub.prompt_id)
                return None
            slice_s = settings.pod_status_poll_s if self._outage_since is None else 2.0
            try:
                # While ComfyUI does not answer, RunPod's status is read at each failed try: a
                # pod taken back or gone is noticed at once, not after the slice or the grace.
                result = self.comfy.wait(
                    sub.prompt_id, deadline_s=min(slice_s, remaining), on_progress=progress,
                    on_outage=self._check_alive,
                )  # fmt: skip
            except ComfyUITimeout:
                self._check_alive(None)
                continue
            except (PromptExecutionError, PromptValidationError) as exc:
                self._fail(key, str(exc).replace(f"prompt {sub.prompt_id}", "the prompt"))
                return None
            except ComfyUIError as exc:  # unreachable, or a prompt ComfyUI forgot (restart)
                self._check_alive(exc)
                self._fail(key, f"{exc}")
                return None
            self._outage_since = None
            return result
        raise PodDied("the run is stopping")

    def _interrupt(self, key: str, prompt_id: str) -> None:
        assert self.comfy is not None
        deadline_s = self.work.settings.prompt_deadline_s
        try:
            self.comfy.interrupt(prompt_id)
            how = "interrupted"
        except ComfyUIError as exc:
            how = f"interrupt failed ({exc})"
        self._fail(key, f"did not finish within {deadline_s:.0f} s; {how}, the pod moves on")
