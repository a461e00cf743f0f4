"""Generate a batch of requests in one in-process run, as a single-run backfill launches it."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, ExecuteInProcessResult, materialize

from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video


def materialize_batch(
    instance: DagsterInstance,
    resources: dict[str, Any],
    keys: list[str],
    tags: dict[str, str] | None = None,
    **kwargs: Any,
) -> ExecuteInProcessResult:
    """One run over the partition range `keys[0]..keys[-1]`: one pod serves every video.

    `keys` must be contiguous in the dynamic partitions' order (the order they were added).
    """
    return materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=instance,
        resources=resources,
        tags={
            **(tags or {}),
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
        },
        raise_on_error=False,
        **kwargs,
    )
