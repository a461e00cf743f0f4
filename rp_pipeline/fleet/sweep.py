"""Pods named for a run: how to find them, and ending the ones nobody tracks."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from rp_pipeline.integrations.runpod.errors import RunPodError
from rp_pipeline.integrations.runpod.names import run_slug

log = logging.getLogger(__name__)


def run_name_prefix(run_id: str) -> str:
    """The start of every pod name of a run (`RunPodClient` names pods `dagster-<run8>-...`)."""
    return f"dagster-{run_slug(run_id)}-"


def pods_named_for_run(client: Any, run_id: str) -> list[Any]:
    prefix = run_name_prefix(run_id)
    return [
        pod
        for pod in client.list_pods()
        if (pod.name.startswith(prefix) or pod.run_id == run_id)
        and str(pod.desired_status).upper() != "TERMINATED"
    ]


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
