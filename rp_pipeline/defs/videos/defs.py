"""What Dagster loads for videos: the `generated_video` graph asset, its checks, the batch job
and the batch schedule.

With RP_AUTOMATION=true the asset also carries a declarative automation condition, for users who
prefer it to the cron: each newly registered (missing) partition is requested once, never one a
run is making. Off by default; its runs still skip anything already made (pay_once).
"""

from dagster import AutomationCondition, Definitions

from rp_pipeline.defs.jobs import generate_videos
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.checks import video_checks
from rp_pipeline.defs.videos.schedules import batch_generation
from rp_pipeline.settings import read_settings

# Missing partitions, once each as they appear, none already in a run.
NEW_REQUESTS = AutomationCondition.on_missing() & ~AutomationCondition.in_progress()

defs = Definitions(
    assets=[
        generated_video.with_attributes(automation_condition=NEW_REQUESTS)
        if read_settings().automation
        else generated_video
    ],
    asset_checks=video_checks,
    jobs=[generate_videos],
    schedules=[batch_generation],
)
