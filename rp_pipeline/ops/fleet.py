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
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_pipeline.budget import BudgetExceeded
from rp_pipeline.ops.harvest import (
    Located,
    head_from_receipt,
    inspect_video,
    is_video_output,
    locate_output,
)
from rp_pipeline.ops.lease import LeaseKeeper
from rp_pipeline.ops.pay_less import receipt_for_prefix
from rp_pipeline.ops.settings import GenerationSettings
from rp_pipeline.ops.slots import PodSlots
from rp_pipeline.ops.state import BatchState, PodInfo, Submitted, VideoRecord
from rp_pipeline.ops.teardown import terminate_confirmed
from rp_pipeline.pod_market import PodMarket, launch_on_market, was_preempted
from rp_pipeline.resources.comfyui import (
    ComfyUIClient,
    ComfyUIError,
    ComfyUITimeout,
    ComfyUIUnavailable,
    PromptExecutionError,
    PromptResult,
    PromptValidationError,
)
from rp_pipeline.resources.pod_token import POD_TOKEN_ENV, new_pod_token, pod_token
from rp_pipeline.resources.runpod_errors import (
    NoCapacityError,
    RunPodAuthError,
    RunPodError,
    UnknownGpuError,
)
from rp_pipeline.warm_pods import (
    LiveFleet,
    claim_idle_pod,
    evict_idle_pod,
    fleet_usage,
    needs_of,
    release_to_idle,
)

log = logging.getLogger(__name__)

# Prompts a pod holds in its ComfyUI queue: the running one + one waiting, so the GPU starts
# the next video the moment one ends, while the rest stay in the shared queue for any pod.
PROMPTS_PER_POD = 2
PROGRESS_EVERY_S = 10.0
# Creates tried per pod slot when RunPod fails before a pod exists (checked by name each time).
CREATE_TRIES = 3
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


def run_name_prefix(run_id: str) -> str:
    """The start of every pod name of a run (`RunPodClient` names pods `dagster-<run8>-...`)."""
    return "dagster-" + re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] + "-"


def pods_named_for_run(client: Any, run_id: str) -> list[Any]:
    prefix = run_name_prefix(run_id)
    return [
        pod
        for pod in client.list_pods()
        if (pod.name.startswith(prefix) or pod.run_id == run_id)
        and str(pod.desired_status).upper() != "TERMINATED"
    ]


def comfy_client(comfyui: Any, client: Any, pod: PodInfo) -> ComfyUIClient:
    """The pod's ComfyUI client: the client id that queues its prompts and the pod's token,
    read back from the pod (never stored in the run)."""
    assert pod.comfyui_url
    token = pod_token(client.get(pod.pod_id))
    return comfyui.get_client(pod.comfyui_url, pod.client_id, token=token)  # type: ignore[no-any-return]


def in_parallel(
    items: Iterable[Any],
    work: Callable[[Any], Any],
    while_waiting: Callable[[], None] | None = None,
    every_s: float = 2.0,
) -> list[tuple[Any, Any]]:
    """(item, result or exception) for each item, worked side by side; `while_waiting` (e.g.
    forwarding the pods' log lines) runs on this thread every `every_s` until all are done."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="fleet") as pool:
        futures = [(item, pool.submit(work, item)) for item in items]
        pending = {future for _, future in futures}
        while pending and while_waiting is not None:
            _, pending = wait(pending, timeout=every_s)
            while_waiting()
        out = []
        for item, future in futures:
            try:
                out.append((item, future.result()))
            except BaseException as exc:
                out.append((item, exc))
        return out


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
    budget: Any = None  # rp_pipeline.budget.RunBudget: asked before each prompt (None: no cap)

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


# ---------------------------------------------------------------------- launching and readiness


@dataclass
class Launcher:
    """Launches and readies single pods of the run (the launch op, and replacements)."""

    runpod: Any
    settings: GenerationSettings
    run_id: str
    leases: LeaseKeeper
    base_env: dict[str, str]
    batch_size: int
    plan: Any = None  # rp_pipeline.ops.pay_less.RunPlan (None: on-demand, no warm pods)
    budget: Any = None  # rp_pipeline.budget.RunBudget, asked before each new pod

    def label(self, slot: str, attempt: int = 0) -> str:
        return f"x{self.batch_size}-{slot}" + (f"-r{attempt}" if attempt else "")

    def launch(self, slot: str, attempt: int = 0) -> PodInfo:
        """Create one pod with a fresh token in its env. When RunPod's answer is lost, the pod
        is looked for by its name once the API answers again and adopted if it exists; only
        when no pod carries the name is the create tried again (never a blind duplicate)."""
        client = self.runpod.get_client()
        market = self.plan.market if self.plan is not None else PodMarket()
        price = self.plan.price if self.plan is not None else 0.0
        if self.budget is not None:  # BudgetExceeded: no pod, the caller says why
            self.budget.check_new_pod(price, boots=False)
        adopted = self._adopt(client, slot)
        if adopted is not None:
            return adopted
        if self.budget is not None:  # a pod of our own must also pay its boot
            self.budget.check_new_pod(price)
        self._make_room(client, price)
        label = self.label(slot, attempt)
        env = {**self.base_env, POD_TOKEN_ENV: new_pod_token()}
        spec = self.runpod.pod_spec(env=env, name=label)
        for tries_left in range(CREATE_TRIES - 1, -1, -1):
            launched_at = time.time()
            try:
                pod = launch_on_market(client, spec, self.run_id, market)
                break
            except RunPodError as exc:
                if isinstance(exc, (NoCapacityError, UnknownGpuError, RunPodAuthError)):
                    raise
                found = self._find_lost_create(client, label)
                if found is not None:
                    log.warning(
                        "create of %s answered %s, but the pod exists: using it", label, exc
                    )
                    pod = found
                    break
                if not tries_left:
                    raise LaunchFailed(without_retry_advice(exc)) from None
                log.warning("create of %s failed (%s) and no such pod exists; again", label, exc)
        info = PodInfo(
            pod_id=pod.id,
            name=pod.name,
            gpu_type=str(pod.gpu_type or ""),
            cost_per_hr=float(pod.cost_per_hr or 0.0),
            launched_at=launched_at,
            slot_key=slot,
            client_id=uuid.uuid4().hex,
            # interruptible-fallback may have rented on-demand; an EXITED on-demand pod is then
            # counted as preempted too, which only adds the flag to its moved prompts.
            interruptible=market.spot,
        )
        self.leases.hold(pod.id)
        return info

    def _adopt(self, client: Any, slot: str) -> PodInfo | None:
        """Claim an idle pod of an earlier run that fits (it skips the boot); the claim is
        this run's lease, which the LeaseKeeper takes over and renews from here."""
        r2 = self.leases.r2
        try:
            claim = claim_idle_pod(
                client, r2.client, r2.bucket, self.run_id,
                image=self.runpod.image, gpu_types=self.runpod.gpu_types,
                volume=self.runpod.network_volume_id, lease_s=self.leases.lease_s,
                prefix=r2.prefix,
            )  # fmt: skip
        except Exception as exc:  # no adoption is never worse than a cold launch
            log.warning("could not look for an idle pod to adopt (%s); launching one", exc)
            return None
        if claim is None:
            return None
        pod = claim.pod
        self.leases.hold(pod.id)
        return PodInfo(
            pod_id=pod.id,
            name=pod.name,
            gpu_type=str(pod.gpu_type or ""),
            cost_per_hr=float(pod.cost_per_hr or 0.0),
            launched_at=claim.claimed_at - claim.idle_s,
            slot_key=slot,
            client_id=uuid.uuid4().hex,
            interruptible=self.plan is not None and self.plan.market.spot,
            adopted_idle_s=claim.idle_s,
            adopted_from_run=claim.previous_run_id,
        )

    def _make_room(self, client: Any, price: float) -> None:
        """Idle pods count against RP_MAX_PODS (they hold no run slot) and the $/h cap: when
        one more pod at `price` would pass either, end an idle one (none of them fits this run,
        or it would have been adopted) so the new pod stays within both."""
        r2 = self.leases.r2
        try:
            usage = fleet_usage(client, r2.client, r2.bucket, r2.prefix)
            if not usage.idle:
                return
            cap = self.settings.max_total_cost_per_hr
            over_cost = running_cost_per_hr(client) + price > cap + 1e-9
            if usage.pods >= self.settings.max_live_pods or over_cost:
                evict_idle_pod(client, r2.client, r2.bucket, self.run_id, r2.prefix)
        except Exception as exc:
            log.warning("could not count idle pods against RP_MAX_PODS and the cost cap (%s)", exc)

    def _find_lost_create(self, client: Any, label: str, wait_s: float = 60.0) -> Any:
        """The pod called `dagster-<run8>-<label>-...`, once the pod list answers again."""
        prefix = run_name_prefix(self.run_id) + label + "-"
        give_up = time.monotonic() + wait_s
        while True:
            try:
                found = [p for p in client.list_pods() if p.name.startswith(prefix)]
                return found[0] if found else None
            except RunPodError as exc:
                if time.monotonic() >= give_up:
                    raise LaunchFailed(
                        f"RunPod's pod list kept failing for {wait_s:.0f} s after an unanswered "
                        f"create ({type(exc).__name__}); pods named for this run are terminated "
                        "when the op ends"
                    ) from None
                time.sleep(2.0)

    def ready(self, pod: PodInfo) -> PodInfo:
        client = self.runpod.get_client()
        ready = client.wait_until_ready(
            pod.pod_id,
            port=self.settings.comfyui_port,
            deadline_s=self.settings.ready_deadline_s,
            terminate_on_timeout=True,
        )
        pod.comfyui_url = ready.comfyui_url
        pod.ready_at = time.time()
        return pod


def running_cost_per_hr(client: Any) -> float:
    """What every running pod of the account costs per hour (the $/h cap is account-wide)."""
    return sum(
        float(pod.cost_per_hr or 0)
        for pod in client.list_pods()
        if str(pod.desired_status).upper() == "RUNNING"
    )


@dataclass(frozen=True)
class IdleRoom:
    """Our idle pods, as room for a new run: `fitting` of them it adopts (no boot, no new
    spend), and the launcher ends others when they stand in the way, so their $/h is room too."""

    cost_per_hr: float = 0.0
    fitting: int = 0


def idle_room(client: Any, r2: Any, runpod: Any) -> IdleRoom:
    """Best effort: no room is counted when R2 cannot be read (the run then sizes as if no
    pod were idle, which is never over a cap)."""
    try:
        fleet = LiveFleet.read(client, r2.client, r2.bucket, r2.prefix)
        usage = fleet.usage()
        if not usage.idle:
            return IdleRoom()
        fitting = fleet.adoptable(
            image=runpod.image, gpu_types=runpod.gpu_types, volume=runpod.network_volume_id,
            now=time.time(),
        )  # fmt: skip
    except Exception as exc:
        log.warning("could not read idle pods' leases (%s); sizing without them", exc)
        return IdleRoom()
    return IdleRoom(usage.idle_cost_per_hr, len(fitting))


class LaunchFailed(Exception):
    """A pod could not be created (and none by its name exists)."""


def without_retry_advice(exc: Exception) -> str:
    """The client's message minus its "... and retry" advice: the run's pods are cleaned up
    here, and a blind retry could leave two pods when the first create did go through."""
    text = re.sub(r"\s*\(after \d+ attempts[^)]*\)", "", str(exc))
    text = re.sub(r"\.?\s*Check the network[^.]*retry\.?", "", text)
    return f"{type(exc).__name__}: {text.strip()}"


def sweep_run_pods(
    client: Any, run_id: str, keep: Iterable[str], wait_s: float = 60.0, confirm_s: float = 60.0
) -> list[str]:
    """Terminate every pod named for the run but not in `keep`; the pod list is retried while
    RunPod errors, up to `wait_s`. Returns the ids terminated."""
    keep = set(keep)
    give_up = time.monotonic() + wait_s
    while True:
        try:
            strays = [p for p in pods_named_for_run(client, run_id) if p.id not in keep]
            break
        except RunPodError:
            if time.monotonic() >= give_up:
                raise
            time.sleep(2.0)
    done = []
    for pod in strays:
        try:
            client.terminate(pod.id, confirm_timeout_s=confirm_s)
            done.append(pod.id)
        except RunPodError as exc:
            log.error("could not terminate stray pod %s of run %s: %s", pod.id, run_id, exc)
    return done
