"""Asset jobs: the batch job behind schedules/backfills, and the preview+catalog job."""

from dagster import AssetSelection, define_asset_job

# One run covers every partition it is launched for (a range), hence one pod for the batch.
# The asset's checks are not steps of this job: its ops materialize partitions with events, not
# an output, so check steps would always be skipped (rp_pipeline.checks says how they run).
generate_videos = define_asset_job(
    "generate_videos",
    selection=AssetSelection.assets("generated_video").without_checks(),
    description="Generate the selected video requests on one pod (single run, one pod boot).",
    tags={"rp/pod-runs": "1"},
)

preview_videos = define_asset_job(
    "preview_videos",
    selection=AssetSelection.assets("video_preview", "video_catalog"),
    description="Poster frame + facts of given R2 videos, then the catalogue.",
)
