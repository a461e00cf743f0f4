"""The object key scheme shared by the agent (writer) and the pipeline (reader).

`{prefix}/{YYYY-MM-DD of the file's mtime, UTC}/{pod id or "local"}/{path relative to the watch dir}`
The pipeline recomputes the key of an output from ComfyUI's (subfolder, filename) and the
file's mtime, so both sides must call this one function.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

DEFAULT_PREFIX = "outputs"
LOCAL_POD_ID = "local"


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


def log_key(pod_id: str, seq: int, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{logs_prefix(pod_id, prefix)}{seq:08d}.jsonl"


def seq_of(key: str) -> int | None:
    """The sequence number of a receipt or log object key, None for any other key."""
    name = key.rsplit("/", 1)[-1]
    stem, _, ext = name.partition(".")
    return int(stem) if ext == "jsonl" and stem.isdigit() else None
