"""A pod whose agent cannot get its outputs into R2 (here: it is pointed at an R2 that never
answers) is noticed once: the first video waits out the receipt deadline, then the pipeline
uploads that pod's outputs itself at once, says so once in the run log, and the metadata says
which videos came through the fallback (devstack: real pod, real agent, real stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance

from rp_devstack.stack import Devstack
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    materialization_times,
    register_requests,
    run_messages,
    with_settings,
    write_prompts,
)

DEADLINE_S = 8.0


def test_a_silent_agent_is_noticed_once_and_the_pipeline_takes_over(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys = write_prompts(prompts_dir, "silent", 3)
    register_requests(instance, resources)
    silent = with_settings(
        resources,
        max_live_pods=1,
        r2_object_deadline_s=DEADLINE_S,
        # The pod's agent (only) is pointed at an endpoint nothing listens on.
        extra_pod_env={"R2_ENDPOINT": "http://127.0.0.1:9", "COMFY_STANDIN_STEP_SECONDS": "0.02"},
    )
    result = generate(instance, silent, keys)
    assert result.success
    found = latest_by_partition(instance)
    assert {found[k]["r2_source"] for k in keys} == {"pipeline_fallback"}
    notices = [m for m in run_messages(instance, result.run_id) if "went silent" in m]
    assert len(notices) == 1, notices
    # Only the first video waited out the deadline; the others followed without it.
    times = materialization_times(instance, result.run_id)
    assert len(times) == 3
    assert times[2] - times[0] < DEADLINE_S, times
