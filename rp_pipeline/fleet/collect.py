"""Collecting a finished prompt's video from R2, riding out R2 errors with backoff."""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_pipeline.fleet.harvest import (
    inspect_video,
    locate_output,
)
from rp_pipeline.fleet.state import PodInfo, VideoRecord
from rp_pipeline.fleet.work import SharedWork
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.results import PromptResult
from rp_pipeline.integrations.r2.resource import R2Resource


def _retryable(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return status >= 500 or code in {"SlowDown", "RequestTimeout", "InternalError", "503"}


class VideoCollecting:
    """The part of `PodWorker` that collects videos from R2 (mixed in)."""

    work: SharedWork
    pod: PodInfo
    r2: R2Resource
    comfy: ComfyUIClient | None
    agent_silent: bool  # the pod's agent missed a receipt: the pipeline uploads its outputs

    def _collect(self, key: str, result: PromptResult, output: Any) -> VideoRecord:
        """Locate the video in R2 and inspect it, riding out R2 errors with backoff while the
        run allows: the pod stays up (it may still have to upload) until this succeeds."""
        settings = self.work.settings
        sub = self.work.state.submitted[key]
        # One clock for the queue wait: submission to the run seeing the prompt done (the run's
        # clock), less the generation (a difference of the pod's stamps). The pod's start stamp
        # is never subtracted from the run's submission time: the pod's clock may be minutes off.
        seen_done_at = time.time()
        give_up = time.monotonic() + settings.r2_retry_s
        delay = 1.0
        while True:
            try:
                # Once the pod's agent missed a receipt, this pod's later outputs are uploaded
                # by the pipeline at once instead of each waiting out the deadline.
                sync = settings.enable_r2_sync and not self.agent_silent
                located = locate_output(
                    r2=self.r2,
                    comfy=self.comfy,
                    output=output,
                    pod_id=self.pod.pod_id,
                    finished_at=float(result.finished_at or time.time()),
                    sync_enabled=sync,
                    deadline_s=settings.r2_object_deadline_s,
                )
                if sync and located.source == "pipeline_fallback":
                    self.agent_silent = True
                    self.work.say(
                        self.pod.pod_id,
                        "its agent went silent (its heartbeat stopped, or no receipt within "
                        f"{settings.r2_object_deadline_s:.0f} s): the pipeline uploads this "
                        "pod's outputs itself from now on",
                        "warning",
                    )
                queue_wait = (
                    max(0.0, seen_done_at - sub.submitted_at - result.generation_time_s)
                    if result.generation_time_s is not None
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
                if time.monotonic() + delay > give_up or self.work.stop.is_set():
                    raise RuntimeError(
                        f"R2 kept failing for {settings.r2_retry_s:.0f} s: {type(exc).__name__}"
                    ) from None
                self.work.say(
                    self.pod.pod_id,
                    f"{key}: R2 error ({type(exc).__name__}); retrying in {delay:.0f} s",
                    "warning",
                )
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    # ------------------------------------------------------------------ the pod's health
