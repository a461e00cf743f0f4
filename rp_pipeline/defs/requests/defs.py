"""What Dagster loads for video requests: the `video_requests` asset (one partition per request)."""

from dagster import Definitions

from rp_pipeline.defs.requests.assets import video_requests

defs = Definitions(assets=[video_requests])
