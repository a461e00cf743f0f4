"""A retried run regenerates only the partitions its earlier attempts did not materialize
(devstack: real pods, real stand-in, real Dagster instance with re-execution)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    Definitions,
    JobDefinition,
    ReexecutionOptions,
    execute_job,
    in_process_executor,
    reconstructable,
)

from rp_devstack.stack import Devstack
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.video_requests.store import load_request, save_request
from tests.pipeline.helpers import pods_of_run, r2_now, register_requests, run_messages
from tests.pipeline.test_fleet import _prompts_with_marker


def generate_videos_job() -> JobDefinition:
    """The code location's job with the devstack resources (rebuilt by `reconstructable`)."""
    from rp_pipeline.definitions import resources_for
    from rp_pipeline.defs.jobs import generate_videos

    defs = Definitions(
        assets=[video_requests, generated_video],
        jobs=[generate_videos],
        resources=resources_for("devstack"),
        executor=in_process_executor,  # as the code location runs it
    )
    return defs.resolve_job_def("generate_videos")


def materialized_in(instance: DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(
        run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return sorted(
        r.event_log_entry.dagster_event.step_materialization_data.materialization.partition
        for r in records
        if r.event_log_entry.dagster_event is not None
    )


def test_retry_generates_only_the_failed_partition(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any], prompts_dir: Path
) -> None:
    keys = _prompts_with_marker(prompts_dir, "retry", 3, 1, "[[fail]]")
    register_requests(instance, resources)
    job = reconstructable(generate_videos_job)
    tags = {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
    with execute_job(job, instance=instance, tags=tags, raise_on_error=False) as first:
        assert not first.success
    assert materialized_in(instance, first.run_id) == sorted([keys[0], keys[2]])

    # The cause goes away (the stored request loses its fault marker), then the run is retried
    # as the daemon or the UI's "Re-execute all" does: every step again, from the first run.
    r2 = r2_now()
    request = load_request(r2, keys[1])
    assert request is not None
    save_request(r2, keys[1], dataclasses.replace(request, prompt=request.prompt[:-9]))
    # (execute_job does not copy the parent's tags as the daemon's retry does: pass them.)
    again = ReexecutionOptions(parent_run_id=first.run_id)
    with execute_job(job, instance=instance, tags=tags, reexecution_options=again) as retry:
        assert retry.success
    assert materialized_in(instance, retry.run_id) == [keys[1]]
    [pod] = pods_of_run(devstack.emulator, retry.run_id)
    assert pod["desired_status"] == "TERMINATED"
    messages = "\n".join(run_messages(instance, retry.run_id))
    assert f"skipping 2 partition(s) an earlier attempt materialized: {keys[0]}" in messages
    assert f"queued {keys[1]}" in messages
    assert f"queued {keys[0]}" not in messages and f"queued {keys[2]}" not in messages

    # A retry of the retry finds every partition done (by either ancestor): no pod at all.
    last = ReexecutionOptions(parent_run_id=retry.run_id)
    with execute_job(job, instance=instance, tags=tags, reexecution_options=last) as nothing_left:
        assert nothing_left.success
    assert materialized_in(instance, nothing_left.run_id) == []
    assert pods_of_run(devstack.emulator, nothing_left.run_id) == []
    assert "every partition is already materialized" in "\n".join(
        run_messages(instance, nothing_left.run_id)
    )
