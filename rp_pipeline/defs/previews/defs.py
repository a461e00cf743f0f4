"""What Dagster loads for previews: poster frames, the catalogue, videos found in R2 and the
sensor that notices them, and the preview job."""

from dagster import Definitions

from rp_pipeline.defs.jobs import preview_videos
from rp_pipeline.defs.previews.assets import r2_external_outputs, video_catalog, video_preview
from rp_pipeline.defs.previews.sensors import r2_new_objects

defs = Definitions(
    assets=[video_preview, video_catalog, r2_external_outputs],
    jobs=[preview_videos],
    sensors=[r2_new_objects],
)
