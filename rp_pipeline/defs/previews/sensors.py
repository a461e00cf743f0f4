"""`r2_new_objects`: new videos in R2 get a preview run; ones made outside Dagster are recorded.

The scan (see r2_scan) never lists the whole prefix; each object's key is its run_key, so an
object seen twice (overlap windows) never launches a second run.
"""

import json
import logging

from dagster import (
    AssetMaterialization,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from rp_pipeline.defs.jobs import preview_videos
from rp_pipeline.integrations.r2.keys import pipeline_partition_key, pod_of
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.r2.scan import scan
from rp_pipeline.integrations.runpod.resource import RunPodResource
from rp_pipeline.media import is_video_key
from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS

log = logging.getLogger(__name__)


# A tick must end within Dagster's sensor timeout (60 s), RunPod outage or not.
SENSOR_READ_PATIENCE_S = 10.0


def live_pod_ids(runpod: RunPodResource) -> set[str] | None:
    """Pods that can still write objects; None if RunPod cannot be asked (scan then over-lists)."""
    try:
        return {
            pod.id
            for pod in runpod.get_client().with_read_patience(SENSOR_READ_PATIENCE_S).list_pods()
            if not pod.is_gone
        }
    except Exception as exc:
        log.warning("cannot list pods (%s); treating every pod as live", type(exc).__name__)
        return None


@sensor(
    job=preview_videos,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
)
def r2_new_objects(context: SensorEvaluationContext, r2: R2Resource, runpod: RunPodResource):
    """Poll R2 for new objects under the outputs prefix (StartAfter cursor per day and pod)."""
    result = scan(r2, context.cursor, live_pod_ids(runpod))
    known = set(context.instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS))
    runs = []
    external = []
    for key in result.new_keys:
        partition = pipeline_partition_key(key)
        if partition not in known:
            external.append(
                AssetMaterialization(
                    asset_key="r2_external_outputs",
                    description=f"{key} appeared in R2 outside any Dagster run",
                    metadata={
                        "r2_key": key,
                        "pod_id": pod_of(key, r2.prefix),
                        "video": is_video_key(key),
                    },
                )
            )
        if is_video_key(key):
            runs.append(
                RunRequest(
                    run_key=key,
                    run_config={"ops": {"video_preview": {"config": {"object_keys": [key]}}}},
                    tags={
                        "rp/r2_key": key[-200:],
                        "rp/origin": "dagster" if partition in known else "external",
                    },
                )
            )
    context.log.info(
        json.dumps(
            {
                "new_objects": len(result.new_keys),
                "preview_runs": len(runs),
                "external": len(external),
                "list_requests": result.list_requests,
                "bootstrapped": result.bootstrapped,
            }
        )
    )
    return SensorResult(run_requests=runs, asset_events=external, cursor=result.cursor)
