"""What a run's pod workers share in the harvest: one queue of partitions, the channel of
events to the op's main thread, and the per-prompt progress lines."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.state import BatchState, PodInfo, VideoRecord
from rp_pipeline.integrations.comfyui.client import (
    ComfyUIClient,
)
from rp_pipeline.integrations.runpod.token import pod_token

# Prompts a pod holds in its ComfyUI queue: the running one + one waiting, so the GPU starts
# the next video the moment one ends, while the rest stay in the shared queue for any pod.
PROMPTS_PER_POD = 2
PROGRESS_EVERY_S = 10.0


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
class SharedWork:
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


class Progress:
    """ComfyUI `progress` events of one prompt, logged every 25 % or PROGRESS_EVERY_S."""

    def __init__(self, work: SharedWork, pod_id: str, key: str) -> None:
        self.work, self.pod_id, self.key = work, pod_id, key
        self.last_quarter = 0
        self.last_at = time.monotonic()

    def __call__(self, prompt_id: str, node: str, value: int, max_: int) -> None:
        quarter = int(4 * value / max_) if max_ else 0
        now = time.monotonic()
        if quarter > self.last_quarter or now - self.last_at >= PROGRESS_EVERY_S:
            self.last_quarter = max(quarter, self.last_quarter)
            self.last_at = now
            pct = round(100 * value / max_) if max_ else 0
            self.work.say(self.pod_id, f"{self.key}: step {value}/{max_} ({pct} %) node {node}")
