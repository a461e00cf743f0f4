"""One dynamic partition per video request, keyed by the request's stable key."""

from dagster import DynamicPartitionsDefinition

VIDEO_REQUESTS_PARTITIONS = "video_requests"
video_request_partitions = DynamicPartitionsDefinition(name=VIDEO_REQUESTS_PARTITIONS)
