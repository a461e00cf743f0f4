"""The run's fleet of pods, worked side by side with threads inside each op of the chain.

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

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_pipeline.fleet.harvest import (
    Located,
    head_from_receipt,
    inspect_video,
    is_video_output,
    locate_output,
)
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.slots import PodSlots
from rp_pipeline.fleet.state import BatchState, PodInfo, Submitted, VideoRecord
from rp_pipeline.fleet.teardown import terminate_confirmed
from rp_pipeline.fleet.warm_pods import (
    needs_of,
    release_to_idle,
)
from rp_pipeline.integrations.comfyui.client import (
    ComfyUIClient,
    ComfyUIError,
    ComfyUITimeout,
    ComfyUIUnavailable,
    PromptExecutionError,
    PromptResult,
    PromptValidationError,
)
from rp_pipeline.integrations.runpod.token import pod_token
from rp_pipeline.money.budget import BudgetExceeded
from rp_pipeline.money.market import was_preempted
from rp_pipeline.money.plan import receipt_for_prefix

log = logging.getLogger(__name__)

# Prompts a pod holds in its ComfyUI queue: the running one + one waiting, so the GPU starts
# the next video the moment one ends, while the rest stay in the shared queue for any pod.
PROMPTS_PER_POD = 2
PROGRESS_EVERY_S = 10.0
# Lines of the pod's own log quoted when it dies, in the partitions' failure.
LOG_LINES_IN_FAILURES = 5


class PodDied(Exception):
    """RunPod says the pod is gone, or its ComfyUI stopped answering for good."""


@dataclass
class Event:
    """What a worker thread tells the op's main thread (the only one that talks to Dagster)."""

    kind: str  # "log" | "video" | "failed" | "pod_end"
    pod_id: str
    partition_key: str = ""
    message: str = ""
    level: str = "info"
    record: VideoRecord | None = None


def comfy_client(comfyui: Any, client: Any, pod: PodInfo) -> ComfyUIClient:
    """The pod's ComfyUI client: the client id that queues its prompts and the pod's token,
    read back from the pod (never stored in the run)."""
    assert pod.comfyui_url
    token = pod_token(client.get(pod.pod_id))
    return comfyui.get_client(pod.comfyui_url, pod.client_id, token=token)  # type: ignore[no-any-return]


@dataclass
class Fleet:
    """Shared state of the harvest: the partition queue, the event channel, live worker count."""

    state: BatchState
    settings: GenerationSettings
    todo: deque[str]
    events: queue.Queue[Event] = field(default_factory=queue.Queue)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    live_workers: int = 0
    replacements_left: int = 0
    budget: Any = (
        None  # rp_pipeline.money.budget.RunBudget: asked before each prompt (None: no cap)
    )

    def emit(self, kind: str, pod_id: str, **kw: Any) -> None:
        self.events.put(Event(kind, pod_id, **kw))

    def say(self, pod_id: str, message: str, level: str = "info") -> None:
        self.emit("log", pod_id, message=f"[pod {pod_id}] {message}", level=level)


class PodWorker(threading.Thread):
    """Drives one pod: keeps its ComfyUI queue fed from the shared queue, follows each prompt with
    the client that queued it, collects each video from R2, terminates the pod when done."""

    def __init__(
        self,
        fleet: Fleet,
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
        self.fleet = fleet
        self.pod = pod
        self.runpod = runpod
        self.comfyui = comfyui
        self.r2 = r2
        self.leases = leases
        self.slots = slots
        self.relaunch = relaunch
        self.client = runpod.get_client()  # one per thread: sessions are not shared
        self.in_flight: deque[str] = deque(
            key
            for key, sub in fleet.state.submitted.items()
            if sub.pod_id == pod.pod_id
            and key not in fleet.state.records
            and key not in fleet.state.failures
        )
        self.comfy: ComfyUIClient | None = None
        self._outage_since: float | None = None
        self.left = False

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
            self.fleet.say(self.pod.pod_id, f"worker crashed: {type(exc).__name__}: {exc}", "error")
            self._fail_all(self.in_flight, f"pod worker crashed: {type(exc).__name__}: {exc}")
            self._leave()
        finally:
            self._end_pod()

    def _leave(self, only_if_idle: bool = False) -> bool:
        """Stop counting as a live worker (once); with only_if_idle, only when the shared
        queue is empty, checked under the same lock as requeues so none is missed."""
        with self.fleet.lock:
            if self.left or (only_if_idle and self.fleet.todo):
                return self.left
            self.left = True
            self.fleet.live_workers -= 1
            return True

    def _serve(self) -> None:
        self.comfy = comfy_client(self.comfyui, self.client, self.pod)
        while not self.fleet.stop.is_set():
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
        if self.fleet.budget is not None:
            self.fleet.budget.finish_prompt()

    def _budget_allows(self, key: str) -> bool:
        """Count the prompt against the run's budget; once the cap is reached, fail it and
        every prompt still queued with the budget's reason (no pod takes them any more)."""
        if self.fleet.budget is None:
            return True
        try:
            self.fleet.budget.start_prompt(self.pod.cost_per_hr)
            return True
        except BudgetExceeded as exc:
            with self.fleet.lock:
                rest = [key, *self.fleet.todo]
                self.fleet.todo.clear()
            self._fail_all(rest, str(exc))
            return False

    def _top_up(self) -> None:
        """Queue prompts until PROMPTS_PER_POD are on the pod (or the shared queue is empty)."""
        while len(self.in_flight) < PROMPTS_PER_POD and not self.fleet.stop.is_set():
            with self.fleet.lock:
                if not self.fleet.todo:
                    return
                key = self.fleet.todo.popleft()
            if not self._budget_allows(key):
                return
            try:
                self._submit(key)
            except PodDied:
                self._prompt_done()
                with self.fleet.lock:
                    self.fleet.todo.appendleft(key)
                raise
            except Exception as exc:
                self._prompt_done()
                self._fail(key, f"ComfyUI refused the prompt: {type(exc).__name__}: {exc}")

    def _submit(self, key: str) -> None:
        assert self.comfy is not None
        video = self.fleet.state.video(key)
        while True:
            try:
                sub = self.comfy.submit(video.api_json)
                break
            except ComfyUIUnavailable as exc:
                self._check_alive(exc)  # PodDied once gone or past the unreachable grace
                time.sleep(2.0)
        self.fleet.state.submitted[key] = Submitted(
            sub.prompt_id, int(sub.number), float(sub.submitted_at), self.pod.pod_id
        )
        self.fleet.state.served_by[key] = self.pod.pod_id
        self.in_flight.append(key)
        self.fleet.say(self.pod.pod_id, f"queued {key} as prompt {sub.prompt_id}")

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
            self.fleet.emit("video", self.pod.pod_id, partition_key=key, record=record)
        except Exception as exc:
            self._fail(key, f"{type(exc).__name__}: {exc}")
        if died is not None:
            raise died

    # ------------------------------------------------------------------ one prompt

    def _follow(self, key: str) -> PromptResult | None:
        """The prompt's result, or None when it failed (recorded) or was interrupted at its
        deadline; raises PodDied when the pod is gone (its prompts go back to the queue)."""
        assert self.comfy is not None
        settings = self.fleet.settings
        sub = self.fleet.state.submitted[key]
        deadline = time.monotonic() + settings.prompt_deadline_s
        progress = Progress(self.fleet, self.pod.pod_id, key)
        while not self.fleet.stop.is_set():
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
        deadline_s = self.fleet.settings.prompt_deadline_s
        try:
            self.comfy.interrupt(prompt_id)
            how = "interrupted"
        except ComfyUIError as exc:
            how = f"interrupt failed ({exc})"
        self._fail(key, f"did not finish within {deadline_s:.0f} s; {how}, the pod moves on")

    def _collect(self, key: str, result: PromptResult, output: Any) -> VideoRecord:
        """Locate the video in R2 and inspect it, riding out R2 errors with backoff while the
        run allows: the pod stays up (it may still have to upload) until this succeeds."""
        settings = self.fleet.settings
        sub = self.fleet.state.submitted[key]
        give_up = time.monotonic() + settings.r2_retry_s
        delay = 1.0
        while True:
            try:
                located = locate_output(
                    r2=self.r2,
                    comfy=self.comfy,
                    output=output,
                    pod_id=self.pod.pod_id,
                    finished_at=float(result.finished_at or time.time()),
                    sync_enabled=settings.enable_r2_sync,
                    deadline_s=settings.r2_object_deadline_s,
                )
                queue_wait = (
                    max(0.0, float(result.started_at) - sub.submitted_at)
                    if result.started_at
                    else None
                )
                return inspect_video(
                    r2=self.r2,
                    located=located,
                    partition_key=key,
                    prompt_id=sub.prompt_id,
                    generation_time_s=result.generation_time_s,
                    queue_wait_s=round(queue_wait, 3) if queue_wait is not None else None,
                )
            except (BotoCoreError, ClientError) as exc:
                if isinstance(exc, ClientError) and not _retryable(exc):
                    raise
                if time.monotonic() + delay > give_up or self.fleet.stop.is_set():
                    raise RuntimeError(
                        f"R2 kept failing for {settings.r2_retry_s:.0f} s: {type(exc).__name__}"
                    ) from None
                self.fleet.say(
                    self.pod.pod_id,
                    f"{key}: R2 error ({type(exc).__name__}); retrying in {delay:.0f} s",
                    "warning",
                )
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    # ------------------------------------------------------------------ the pod's health

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

    # ------------------------------------------------------------------ endings

    def _fail(self, key: str, reason: str) -> None:
        self.fleet.state.served_by.setdefault(key, self.pod.pod_id)
        self.fleet.emit("failed", self.pod.pod_id, partition_key=key, message=reason)

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
        self.fleet.say(
            dead.pod_id,
            f"{why}; {len(unfinished)} unfinished prompt(s) go back to the queue "
            f"({', '.join(unfinished) or 'none'})",
            "error",
        )
        self._terminate(dead)
        orphaned: list[str] = []
        with self.fleet.lock:
            self.fleet.todo.extendleft(reversed(unfinished))
            others = self.fleet.live_workers - 1
            replace = (
                others == 0
                and bool(self.fleet.todo)
                and self.fleet.replacements_left > 0
                and not self.fleet.stop.is_set()
            )
            if replace:
                self.fleet.replacements_left -= 1
            else:
                self.left = True
                self.fleet.live_workers -= 1
                if others == 0:
                    orphaned = list(self.fleet.todo)
                    self.fleet.todo.clear()
        if not replace:
            if orphaned:
                self._fail_all(orphaned, f"pod {dead.pod_id} died ({why}) and no pod was left")
            return False
        self.fleet.say(dead.pod_id, "no pod of the run is left: launching a replacement")
        new = self.relaunch(dead)
        if new is None:
            with self.fleet.lock:
                self.left = True
                self.fleet.live_workers -= 1
                orphaned = list(self.fleet.todo)
                self.fleet.todo.clear()
            self._fail_all(orphaned, f"pod {dead.pod_id} died and its replacement failed")
            return False
        self.fleet.emit("pod_end", dead.pod_id)
        self.pod = new
        self._outage_since = None
        self.fleet.say(new.pod_id, f"replacement for {dead.pod_id} ready")
        return True

    def _salvage(self, dead: PodInfo, keys: list[str]) -> list[str]:
        """The dead pod's prompts that must run again. One whose video the pod's agent already
        put in R2 is collected from its receipt instead (never generated twice); each moved
        off a pod RunPod took back is marked preempted."""
        for _ in keys:
            self._prompt_done()
        state = self.fleet.state
        try:
            preempted = was_preempted(self.client, dead.pod_id, dead.interruptible)
        except Exception:
            preempted = False
        rerun = []
        for key in keys:
            if preempted:
                state.preempted[key] = dead.pod_id
            try:
                receipt = (
                    receipt_for_prefix(self.r2, dead.pod_id, state.video(key).filename_prefix)
                    if self.fleet.settings.enable_r2_sync
                    else None
                )
            except Exception:
                receipt = None
            if receipt is None:
                rerun.append(key)
                continue
            sub = state.submitted[key]
            located = Located(head_from_receipt(receipt), receipt.upload_done, "agent", receipt)
            record = inspect_video(
                r2=self.r2, located=located, partition_key=key, prompt_id=sub.prompt_id,
                generation_time_s=None, queue_wait_s=None,
            )  # fmt: skip
            self.fleet.say(dead.pod_id, f"{key}: its video reached R2 before the pod died")
            self.fleet.emit("video", dead.pod_id, partition_key=key, record=record)
        return rerun

    def _terminate(self, pod: PodInfo) -> None:
        if pod.terminated_at is not None and pod.terminate_confirmed:
            return
        terminate_confirmed(self.client, pod, self.fleet.settings.terminate_confirm_s)
        if self.fleet.budget is not None:
            self.fleet.budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
        self.leases.release(pod.pod_id)
        if self.slots is not None and pod.slot_key and pod.terminate_confirmed:
            # An unconfirmed pod keeps its slot: it may still be running.
            self.slots.free(pod.slot_key)

    def _end_pod(self) -> None:
        if self._keep_warm():
            idle_s = self.fleet.state.plan.idle_s
            self.fleet.say(self.pod.pod_id, f"idle for the next run for up to {idle_s:.0f} s")
        else:
            self._terminate(self.pod)
            state = "confirmed" if self.pod.terminate_confirmed else "UNCONFIRMED (may still bill)"
            self.fleet.say(self.pod.pod_id, f"terminated ({state})")
        self.fleet.emit("pod_end", self.pod.pod_id)

    def _keep_warm(self) -> bool:
        """Release a healthy pod to idle (RP_POD_IDLE_S > 0) instead of terminating it: its
        lease turns idle, the pod-side watcher ends it when nobody adopts it in time. This
        run's bill for it ends here, and it gives back its run slot (idle pods are counted
        against RP_MAX_PODS from RunPod's pod list and their leases instead)."""
        plan, pod = self.fleet.state.plan, self.pod
        if plan is None or plan.idle_s <= 0 or pod.failure or pod.terminated_at is not None:
            return False
        if self.fleet.stop.is_set():
            return False
        self.leases.forget(pod.pod_id)  # a late renewal would undo the release
        try:
            needs = needs_of(
                self.client, self.client.get(pod.pod_id), self.runpod.image,
                self.runpod.network_volume_id,
            )  # fmt: skip
            kept = release_to_idle(
                self.r2.client, self.r2.bucket, pod.pod_id, self.fleet.state.run_id, needs,
                plan.idle_s, prefix=self.r2.prefix,
            )  # fmt: skip
        except Exception as exc:
            self.fleet.say(pod.pod_id, f"could not keep the pod warm ({exc}); terminating it")
            kept = False
        if not kept:
            return False
        pod.terminated_at, pod.terminate_confirmed, pod.kept_warm = time.time(), True, True
        if self.fleet.budget is not None:
            self.fleet.budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
        if self.slots is not None and pod.slot_key:
            self.slots.free(pod.slot_key)
        return True


class Progress:
    """ComfyUI `progress` events of one prompt, logged every 25 % or PROGRESS_EVERY_S."""

    def __init__(self, fleet: Fleet, pod_id: str, key: str) -> None:
        self.fleet, self.pod_id, self.key = fleet, pod_id, key
        self.last_quarter = 0
        self.last_at = time.monotonic()

    def __call__(self, prompt_id: str, node: str, value: int, max_: int) -> None:
        quarter = int(4 * value / max_) if max_ else 0
        now = time.monotonic()
        if quarter > self.last_quarter or now - self.last_at >= PROGRESS_EVERY_S:
            self.last_quarter = max(quarter, self.last_quarter)
            self.last_at = now
            pct = round(100 * value / max_) if max_ else 0
            self.fleet.say(self.pod_id, f"{self.key}: step {value}/{max_} ({pct} %) node {node}")


def _retryable(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or code in {"SlowDown", "RequestTimeout", "InternalError", "503"}
