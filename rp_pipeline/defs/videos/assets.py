"""`generated_video`: a graph-backed asset, one partition per request, a fleet of pods per run.

A backfill of N partitions is a single run (BackfillPolicy.single_run) on k pods, k = min(ceil(N /
videos_per_pod), RP_MAX_PODS, what the cost cap allows): the pods pull prompts from one queue,
each video is materialized as soon as it is in R2, and each pod is terminated once the queue is
empty and its last video is in R2.
"""

from dagster import AssetIn, BackfillPolicy, Nothing, graph_asset

from rp_pipeline.defs.requests.partitions import video_request_partitions
from rp_pipeline.defs.videos.ops import (
    harvest_outputs,
    launch_pod,
    submit_workflow,
    terminate_pod,
    wait_for_ready,
)
from rp_pipeline.defs.videos.validate import validate_requests


@graph_asset(
    partitions_def=video_request_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    ins={"video_requests": AssetIn(dagster_type=Nothing)},
    group_name="video",
    kinds={"runpod", "comfyui", "s3"},
)
def generated_video(video_requests):
    """A WAN 2.2 video rendered by ComfyUI on a RunPod pod and stored in R2 by the pod's agent.

    Each partition's materialization carries the R2 key, presigned URL, probed facts, timings,
    pod, cost attributed so far and the request; its poster frame renders in the UI. The
    settled cost follows as an observation once the run's pods are terminated.
    """
    state = validate_requests(video_requests)
    return terminate_pod(harvest_outputs(submit_workflow(wait_for_ready(launch_pod(state)))))
