"""The object key scheme shared by the agent (writer) and the pipeline (reader).

`{prefix}/{YYYY-MM-DD of the file's mtime, UTC}/{pod id or "local"}/{path relative to the watch dir}`
The pipeline recomputes the key of an output from ComfyUI's (subfolder, filename) and the
file's mtime, so both sides must call this one function.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import PurePosixPath

DEFAULT_PREFIX = "outputs"
LOCAL_POD_ID = "local"
PREFIX_ENV = "R2_PREFIX"


def prefix_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The key prefix in R2 (env R2_PREFIX, default `outputs`), for every process of a deployment."""
    env = os.environ if environ is None else environ
    return env.get(PREFIX_ENV) or DEFAULT_PREFIX


def object_key(
    relative_path: str, mtime: float, pod_id: str | None = None, prefix: str = DEFAULT_PREFIX
) -> str:
    day = datetime.fromtimestamp(mtime, tz=UTC).strftime("%Y-%m-%d")
    rel = PurePosixPath(relative_path.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"output path must be relative to the watch dir, got {relative_path!r}")
    parts = [prefix.strip("/"), day, pod_id or LOCAL_POD_ID, str(rel)]
    return "/".join(p for p in parts if p)


# Objects the pod and the pipeline exchange about the outputs (upload receipts, run leases) live
# under `{prefix}/_rp/`: no day folder starts with "_", so listings of video days never see them.
CONTROL_DIR = "_rp"


def control_prefix(prefix: str = DEFAULT_PREFIX) -> str:
    return "/".join(p for p in (prefix.strip("/"), CONTROL_DIR) if p) + "/"


def lease_key(pod_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The pod's lease: JSON {"pod_id", "run_id", "renewed_at", "expires_at"} (epoch seconds),
    written by the run that uses the pod; the pod stops itself once `expires_at` has passed."""
    return f"{control_prefix(prefix)}leases/{pod_id}.json"


def receipts_prefix(pod_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Where the agent on `pod_id` writes its upload receipts."""
    return f"{control_prefix(prefix)}receipts/{pod_id}/"


def receipt_key(pod_id: str, seq: int, prefix: str = DEFAULT_PREFIX) -> str:
    """Receipt number `seq` of `pod_id`: zero-padded so keys list in write order."""
    return f"{receipts_prefix(pod_id, prefix)}{seq:08d}.jsonl"


def logs_prefix(pod_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Where the agent on `pod_id` ships the pod's log lines (agent, ComfyUI, start.sh)."""
    return f"{control_prefix(prefix)}logs/{pod_id}/"


def boot_key(pod_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The pod's boot status (start phases, model download progress): the agent's copy of the
    file described in rp_agent.bootstatus, replaced whenever it changes."""
    return f"{control_prefix(prefix)}boot/{pod_id}.json"


def heartbeat_key(pod_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Rewritten by the agent on `pod_id` every few seconds while it runs: how old it is on
    R2's clock says whether the agent is still alive (rp_agent.heartbeat)."""
    return f"{control_prefix(prefix)}heartbeats/{pod_id}.json"


def log_key(pod_id: str, seq: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{logs_prefix(pod_id, prefix)}{seq:08d}.jsonl"


def seq_of(key: str) -> int | None:
    """The sequence number of a receipt or log object key, None for any other key."""
    name = key.rsplit("/", 1)[-1]
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "jsonl" and stem.isdigit() else None


# -- Pipeline renders -------------------------------------------------------------------------
# A pipeline render's ComfyUI `filename_prefix` is `video/<workflow>/<partition key>-<run id[:8]>`
# and ComfyUI appends `_00001_.mp4`, so the object lands at
# `{prefix}/{day}/{pod}/video/<workflow>/<partition key>-<run8>_00001_.mp4`. A Dagster partition
# key is any string (`a/b`, spaces, unicode), so it is escaped into ONE safe path segment: every
# character outside [A-Za-z0-9_.-] (and a leading ".", which would make a hidden file the agent
# skips) becomes `~XX` per UTF-8 byte. The escaping is reversible, so the full key comes back.
VIDEO_DIR = "video"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ESCAPE = re.compile(r"~([0-9A-F]{2})")
_RENDER_FILE = re.compile(r"^(?P<key>[A-Za-z0-9_.~-]+)-(?P<run>[0-9a-f]{8})_\d+_?\.[A-Za-z0-9]+$")


def escape_segment(text: str) -> str:
    """`text` as one file-name-safe path segment (reversible with `unescape_segment`)."""
    out = []
    for index, char in enumerate(text):
        if char in _SAFE and not (index == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def unescape_segment(segment: str) -> str:
    raw = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(segment):
        raw += segment[pos : match.start()].encode("ascii")
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += segment[pos:].encode("ascii")
    return raw.decode("utf-8")


def filename_prefix(workflow: str, partition_key: str, run_id: str) -> str:
    """ComfyUI `filename_prefix` of a pipeline render: unique per run, because ComfyUI serves an
    identical prompt from its cache and writes no new file."""
    return f"{VIDEO_DIR}/{escape_segment(workflow)}/{escape_segment(partition_key)}-{run_id[:8]}"


def default_prefix(workflow: str, request_id: str) -> str:
    """`video/<workflow>/<request id>` for renders outside a pipeline run."""
    return f"{VIDEO_DIR}/{escape_segment(workflow)}/{escape_segment(request_id)}"


def pipeline_partition_key(object_key: str) -> str | None:
    """The partition key a pipeline-made object belongs to (None for anything made outside
    Dagster, e.g. ComfyUI used by hand)."""
    parts = object_key.split("/")
    if len(parts) < 3 or parts[-3] != VIDEO_DIR:
        return None
    match = _RENDER_FILE.match(parts[-1])
    if match is None:
        return None
    try:
        return unescape_segment(match.group("key"))
    except (UnicodeDecodeError, UnicodeEncodeError):
        return None


def pod_of(object_key: str, prefix: str = DEFAULT_PREFIX) -> str:
    """The pod id part of an output's key (`{prefix}/{day}/{pod}/...`), "" if it has none."""
    head = prefix.strip("/")
    if head and not object_key.startswith(head + "/"):
        return ""
    parts = object_key[len(head) + 1 if head else 0 :].split("/")
    return parts[1] if len(parts) > 2 else ""
