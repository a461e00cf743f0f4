"""Pods named for a run: how to find them, and ending the ones nobody tracks."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rp_pipeline.integrations.runpod.client import RunPodClient
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
    client: Any,
    run_id: str,
    keep: Iterable[str],
    wait_s: float | None = None,
    confirm_s: float = 60.0,
) -> list[str]:
    """Terminate every pod named for the run but not in `keep`. Returns the ids terminated.
    The client retries the pod list while RunPod fails, for its read patience or `wait_s` when
    given; if the list still fails, the client's one-line error is raised."""
    if wait_s is not None and isinstance(client, RunPodClient):
        client = client.with_read_patience(wait_s)
    keep = set(keep)
    strays = [p for p in pods_named_for_run(client, run_id) if p.id not in keep]
    done = []
    for pod in strays:
        try:
            client.terminate(pod.id, confirm_timeout_s=confirm_s)
            done.append(pod.id)
        except RunPodError as exc:
            log.error("could not terminate stray pod %s of run %s: %s", pod.id, run_id, exc)
    return done
