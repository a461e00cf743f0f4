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
