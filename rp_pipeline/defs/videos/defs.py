"""What Dagster loads for videos: the `generated_video` graph asset, its checks, the batch job
and the batch schedule."""

from dagster import Definitions

from rp_pipeline.defs.jobs import generate_videos
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.checks import video_checks
from rp_pipeline.defs.videos.schedules import batch_generation

defs = Definitions(
    assets=[generated_video],
    asset_checks=video_checks,
    jobs=[generate_videos],
    schedules=[batch_generation],
)
