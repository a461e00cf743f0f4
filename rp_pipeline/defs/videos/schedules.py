"""`batch_generation`: register requests from prompts/*.yaml and generate the pending ones in
one batch run (one pod). Cron from RP_BATCH_CRON; stopped until someone turns it on. While a
setting is bad it skips, naming it: every run it requested would fail before its first pod."""

import hashlib

from dagster import (
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.defs.jobs import generate_videos
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.settings import read_settings
from rp_pipeline.video_requests.model import prompts_dir
from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS, register_requests


def pending_partitions(context: ScheduleEvaluationContext) -> list[str]:
    instance = context.instance
    materialized = instance.get_materialized_partitions(GENERATED_VIDEO)
    return [
        key
        for key in instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS)
        if key not in materialized
    ]


@schedule(
    job=generate_videos,
    cron_schedule=read_settings().batch_cron,
    default_status=DefaultScheduleStatus.STOPPED,
)
def batch_generation(context: ScheduleEvaluationContext, r2: R2Resource):
    """Add partitions for new valid requests, then one run over every pending partition."""
    if problems := read_settings().problems:
        return SkipReason("bad settings, no run requested: " + "; ".join(problems))
    done = register_requests(context.instance, r2, prompts_dir())
    for problem in done.problems:
        context.log.warning(f"request not registered: {problem}")
    pending = pending_partitions(context)
    if not pending:
        return SkipReason("no pending video requests")
    # One run over the range from the first to the last pending partition (a single-run
    # backfill), asking for exactly the pending ones: made partitions inside it are not touched.
    batch_id = hashlib.sha256("\n".join(pending).encode()).hexdigest()[:12]
    only = {"config": {"only": pending}}
    return RunRequest(
        run_key=f"batch-{batch_id}",
        run_config={"ops": {"generated_video": {"ops": {"validate_requests": only}}}},
        tags={
            "dagster/asset_partition_range_start": pending[0],
            "dagster/asset_partition_range_end": pending[-1],
            "rp/batch_size": str(len(pending)),
        },
    )
