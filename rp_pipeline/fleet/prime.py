"""Priming the ready pods: each gets its first prompts (the running one + one queued behind
it) before the harvest starts; the rest stay in the shared queue its workers pull from."""

from __future__ import annotations

from collections import deque

from rp_pipeline.fleet.billing import run_budget
from rp_pipeline.fleet.renders import note_submitted
from rp_pipeline.fleet.run import RunPods
from rp_pipeline.fleet.start_images import ensure_start_image
from rp_pipeline.fleet.work import PROMPTS_PER_POD, comfy_client
from rp_pipeline.integrations.comfyui.errors import ComfyUIError, PromptValidationError
from rp_pipeline.money.budget import BudgetExceeded
from rp_pipeline.video_requests.start_image import StartImageError


def prime_pods(pods: RunPods) -> None:
    state, log = pods.state, pods.log
    live = state.live_pods()
    todo = deque(state.partition_keys)
    clients = {pod.pod_id: comfy_client(pods.comfyui, pods.client, pod) for pod in live}
    budget = run_budget(state)
    skip: set[str] = set()
    for _ in range(PROMPTS_PER_POD):
        for pod in live:
            if not todo or pod.pod_id in skip:
                continue
            key = todo.popleft()
            try:
                budget.start_prompt(pod.cost_per_hr)
            except BudgetExceeded as exc:  # fail it and the rest of the queue: no pod runs them
                for failed in [key, *todo]:
                    state.failures[failed] = str(exc)
                    log.error(f"{failed}: {exc}")
                todo.clear()
                continue
            try:
                comfy = clients[pod.pod_id]
                sub = comfy.submit(ensure_start_image(comfy, pods.r2, state.video(key)))
            except (PromptValidationError, StartImageError) as exc:
                state.failures[key] = str(exc)
                state.served_by[key] = pod.pod_id
                log.error(f"{key}: {exc}")
                continue
            except ComfyUIError as exc:
                # The pod's worker finds out what is wrong with it; the prompt waits.
                todo.appendleft(key)
                skip.add(pod.pod_id)
                log.warning(f"pod {pod.pod_id}: could not queue {key}: {exc}")
                continue
            note_submitted(state, pods.r2, pod, key, sub)
            log.info(f"[pod {pod.pod_id}] queued {key} as prompt {sub.prompt_id}")
