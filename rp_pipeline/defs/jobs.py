"""Asset jobs: the batch job behind schedules/backfills, and the preview+catalog job."""

from dagster import AssetSelection, define_asset_job

# One run covers every partition it is launched for (a range), on a fleet of up to RP_MAX_PODS pods.
# The asset's checks are not steps of this job: its ops materialize partitions with events, not
# an output, so check steps would always be skipped (rp_pipeline.defs.videos.checks says how they run).
generate_videos = define_asset_job(
    "generate_videos",
    selection=AssetSelection.assets("generated_video").without_checks(),
    description="Generate the selected video requests in one run on up to RP_MAX_PODS pods.",
    tags={
        "rp/pod-runs": "1",
        # One automatic retry of a failed run (run_retries in deploy/dagster.yaml) on fresh pods:
        # ALL_STEPS, because the steps after launch_pod hand over pods that the failure already
        # terminated, so resuming FROM_FAILURE could only fail again. The retry's
        # validate_requests drops the partitions an earlier attempt materialized.
        "dagster/max_retries": "1",
        "dagster/retry_strategy": "ALL_STEPS",
    },
)

preview_videos = define_asset_job(
    "preview_videos",
    selection=AssetSelection.assets("video_preview", "video_catalog"),
    description="Poster frame + facts of given R2 videos, then the catalogue.",
)
