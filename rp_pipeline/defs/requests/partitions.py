"""One dynamic partition per video request, keyed by the request's stable key."""

from dagster import DynamicPartitionsDefinition

from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS

video_request_partitions = DynamicPartitionsDefinition(name=VIDEO_REQUESTS_PARTITIONS)
