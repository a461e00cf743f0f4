"""Where everything lives in the bucket, as the pipeline reads and writes it: the one place to
look up a key.

Under the output prefix (`R2Resource.prefix`, env R2_PREFIX, default `outputs`) the pod's agent
writes, so those keys come from `rp_agent.keys` (the writer's side; both sides must agree):

    {prefix}/{day}/{pod}/{path}               outputs (videos)    object_key, agent_relpath, pod_of,
                                                                  pipeline_partition_key
    {prefix}/_rp/receipts/{pod}/{seq}.jsonl   upload receipts     receipts_prefix
    {prefix}/_rp/logs/{pod}/{seq}.jsonl       pod log lines       logs_prefix
    {prefix}/_rp/leases/{pod}.json            a pod's lease       lease_key (format: fleet.leases)
    {prefix}/_rp/boot/{pod}.json              the pod's boot      boot_key (fleet.boot reads it)
    {prefix}/_rp/heartbeats/{pod}.json        the agent is alive  heartbeat_key (r2.reports)

Under the same control folder, written by the pipeline only:

    {prefix}/_rp/renders/{partition}/{run8}.json   which run rendered a partition on which pod
                                                   (fleet.renders)   render_markers_prefix,
                                                                     render_marker_key
    {prefix}/_rp/doctor/probe-{random}             `rp-launch doctor`'s R2 probe (deleted)
                                                                     doctor_probe_key

Beside the prefix, written by the pipeline only:

    requests/{partition key}.json             a partition's request         request_key
    previews/{video key}.json, .png           preview facts, poster frame   preview_json_key,
                                                                            preview_png_key
    catalog/index.json, catalog/index.html    the gallery                   CATALOG_INDEX_KEY,
                                                                            CATALOG_HTML_KEY
"""

from rp_agent.keys import (
    CONTROL_DIR,
    DEFAULT_PREFIX,
    boot_key,
    control_prefix,
    escape_segment,
    filename_prefix,
    heartbeat_key,
    lease_key,
    logs_prefix,
    object_key,
    pipeline_partition_key,
    pod_of,
    receipts_prefix,
    seq_of,
)

__all__ = [
    "CATALOG_HTML_KEY",
    "CATALOG_INDEX_KEY",
    "CONTROL_DIR",
    "DEFAULT_PREFIX",
    "PREVIEWS_PREFIX",
    "REQUESTS_PREFIX",
    "agent_relpath",
    "boot_key",
    "control_prefix",
    "doctor_probe_key",
    "filename_prefix",
    "heartbeat_key",
    "lease_key",
    "logs_prefix",
    "object_key",
    "pipeline_partition_key",
    "pod_of",
    "preview_json_key",
    "preview_png_key",
    "preview_video_key",
    "receipts_prefix",
    "render_marker_key",
    "render_markers_prefix",
    "request_key",
    "seq_of",
]

REQUESTS_PREFIX = "requests"
PREVIEWS_PREFIX = "previews"
CATALOG_INDEX_KEY = "catalog/index.json"
CATALOG_HTML_KEY = "catalog/index.html"


def agent_relpath(key: str, prefix: str) -> str:
    """`{prefix}/{day}/{pod}/{relpath}` -> relpath (the inverse of `object_key`)."""
    return key[len(prefix.strip("/")) + 1 :].split("/", 2)[-1]


def request_key(partition_key: str) -> str:
    """The request of a `generated_video` partition, as the `video_requests` asset stored it."""
    return f"{REQUESTS_PREFIX}/{partition_key}.json"


def render_markers_prefix(partition_key: str, prefix: str) -> str:
    """Where every run's render marker of a partition lies (one segment per partition key)."""
    return f"{control_prefix(prefix)}renders/{escape_segment(partition_key)}/"


def render_marker_key(partition_key: str, run_id: str, prefix: str) -> str:
    """The marker of one run's render of the partition (the run id's first 8 characters, as in
    the render's `filename_prefix`)."""
    return f"{render_markers_prefix(partition_key, prefix)}{run_id[:8]}.json"


def doctor_probe_key(prefix: str, token: str) -> str:
    """`rp-launch doctor`'s probe object (written, read, listed, deleted): under the control
    folder, so no listing of videos ever sees it."""
    return f"{control_prefix(prefix)}doctor/probe-{token}"


def preview_json_key(video_key: str) -> str:
    """The preview facts of a video (what `video_preview` wrote; the catalog lists these)."""
    return f"{PREVIEWS_PREFIX}/{video_key}.json"


def preview_png_key(video_key: str) -> str:
    """The poster frame of a video, beside its preview facts (stored by the harvest)."""
    return f"{PREVIEWS_PREFIX}/{video_key}.png"


def preview_video_key(preview_key: str) -> str | None:
    """The video a preview facts key describes (None for a poster or any other key)."""
    if not (preview_key.startswith(f"{PREVIEWS_PREFIX}/") and preview_key.endswith(".json")):
        return None
    return preview_key[len(PREVIEWS_PREFIX) + 1 : -len(".json")]
