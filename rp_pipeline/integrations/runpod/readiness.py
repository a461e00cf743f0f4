"""Readiness: a pod is ready when it RUNs, maps the ComfyUI port and ComfyUI answers HTTP
through the pod's token proxy, not when desiredStatus says RUNNING. ERROR / EXITED before that
fails at once, with the last lines of the pod's log; so does a pod that misses its deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import requests

from rp_pipeline.integrations.runpod.backend import RunPodBackend
from rp_pipeline.integrations.runpod.errors import (
    PodNotReadyError,
    RunPodError,
    RunPodTransientError,
)
from rp_pipeline.integrations.runpod.pods import COMFYUI_PORT, Pod, ReadyPod, port_url
from rp_pipeline.integrations.runpod.token import pod_token

log = logging.getLogger(__name__)

LOG_LINES_IN_ERRORS = 5


class PodLifecycle(Protocol):
    """What readiness needs from `RunPodClient`."""

    backend: RunPodBackend
    poll_interval_s: float

    def terminate(self, pod_id: str, confirm_timeout_s: float = 60.0) -> None: ...

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None: ...


def wait_until_ready(
    client: PodLifecycle,
    pod_id: str,
    port: int = COMFYUI_PORT,
    deadline_s: float = 300.0,
    terminate_on_timeout: bool = True,
    on_state: Callable[[str], None] | None = None,
    token: str | None = None,
) -> ReadyPod:
    """Poll until the pod runs, maps `port`, and ComfyUI answers `GET /system_stats`.

    ComfyUI sits behind the pod's token proxy: the probe sends `token`, by default the one
    in the pod's env (RP_POD_TOKEN). Fails fast on EXITED/TERMINATED. On timeout or exit
    the pod is terminated unless `terminate_on_timeout` is False (a dead or late pod only
    costs money). An API error is one more poll, not a failure: the deadline decides.
    """
    deadline = time.monotonic() + deadline_s
    state = ""
    while True:
        try:
            record = client.backend.get_pod(pod_id)
        except RunPodTransientError as exc:
            record, new_state = {}, f"API unreachable ({exc}); retrying"
        else:
            if record is None:
                raise PodNotReadyError(pod_id, "RunPod no longer knows the pod", terminated=True)
            pod = Pod.from_record(record)
            url = port_url(pod_id, pod.runtime_ports, port)
            new_state = describe(pod, url, port)
            if pod.is_gone:
                reason = f"it is {pod.status or pod.desired_status} before ComfyUI answered"
                _give_up(client, pod_id, reason + log_tail(client, pod_id), terminate_on_timeout)
            probe_token = token or pod_token(pod)
            if pod.desired_status == "RUNNING" and url and comfy_answers(url, probe_token):
                log.info("pod %s ready: ComfyUI at %s", pod_id, url)
                return ReadyPod(pod=pod, comfyui_url=url)
        if new_state != state:
            state = new_state
            log.info("pod %s: %s", pod_id, state)
            if on_state:
                on_state(state)
        if time.monotonic() >= deadline:
            _give_up(
                client,
                pod_id,
                f"not ready within {deadline_s:.0f} s (last state: {state})"
                + log_tail(client, pod_id),
                terminate_on_timeout,
            )
        time.sleep(max(0.0, min(client.poll_interval_s, deadline - time.monotonic())))


def log_tail(client: PodLifecycle, pod_id: str) -> str:
    """ "; last log lines: a | b" for error messages, or "" when there are none."""
    lines = client.pod_logs(pod_id, LOG_LINES_IN_ERRORS)
    if not lines:
        return ""
    return "; last log lines: " + " | ".join(line.strip()[:200] for line in lines)


def _give_up(client: PodLifecycle, pod_id: str, reason: str, terminate: bool) -> None:
    if terminate:
        try:
            client.terminate(pod_id)
        except RunPodError as exc:
            raise PodNotReadyError(
                pod_id, f"{reason}; terminating it failed too: {exc}", terminated=False
            ) from None
    raise PodNotReadyError(pod_id, reason, terminated=terminate)


def describe(pod: Pod, url: str | None, port: int) -> str:
    if pod.desired_status != "RUNNING":
        return pod.desired_status
    if pod.status == "PROVISIONING":
        return "PROVISIONING (RunPod is allocating the machine)"
    if not pod.runtime_ports and url is None:
        return "RUNNING, container starting (no runtime yet)"
    if url is None:
        return f"RUNNING, port {port} not mapped yet"
    return f"RUNNING, waiting for ComfyUI at {url}"


def comfy_answers(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path in ("/system_stats", "/queue"):
        try:
            if requests.get(url + path, headers=headers, timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            return False
    return False
