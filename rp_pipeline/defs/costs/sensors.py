"""`gpu_costs_on_new_videos`: the cost table is refreshed when new videos or settled costs land.

Its cursor is the newest `generated_video` event it has seen (materialization or settled-cost
observation); a newer one asks for one `refresh_gpu_costs` run, keyed by that event, so a tick
seen twice never launches two runs. The run only reads the instance: no pod, no spend.
"""

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    sensor,
)

from rp_pipeline.asset_keys import GENERATED_VIDEO

refresh_gpu_costs = define_asset_job(
    "refresh_gpu_costs",
    selection=["gpu_cost_table"],
    description="Recompute the measured cost per video of each GPU type (reads the instance only).",
)


def newest_video_event(instance: object) -> int:
    """The storage id of the newest generated_video materialization or observation (0: none)."""
    newest = 0
    for fetch in (instance.fetch_materializations, instance.fetch_observations):  # type: ignore[attr-defined]
        records = fetch(GENERATED_VIDEO, limit=1).records
        if records:
            newest = max(newest, records[0].storage_id)
    return newest


@sensor(
    job=refresh_gpu_costs, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING
)
def gpu_costs_on_new_videos(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    newest = newest_video_event(context.instance)
    seen = int(context.cursor or 0)
    if newest <= seen:
        return SkipReason("no new generated_video event since the last cost table")
    return SensorResult(run_requests=[RunRequest(run_key=f"videos-{newest}")], cursor=str(newest))
