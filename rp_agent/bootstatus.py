"""The pod's boot status file: when each start phase happened, and model download progress.

One small JSON file on the container disk (env RP_BOOT_STATUS, start.sh sets
`$RP_AGENT_STATE_DIR/boot.json`), written by start.sh (`rp-agent boot-phase NAME`) and by the
model downloader, read by the agent, which copies it to `{prefix}/_rp/boot/{pod_id}.json` in the
bucket whenever it changes, for the pipeline to show. Shape:

    {"pod_id": "abc", "updated": 1765000000.0,
     "phases": {"container_started": t, "models_started": t, "models_verified": t,
                "comfyui_started": t, "comfyui_ready": t},      # epoch seconds, each once
     "models": {"state": "downloading"|"verified"|"failed", "bytes_done": n, "bytes_total": n,
                "rate_bps": n, "eta_s": n|null, "files_total": n, "files_done": n,
                "files_skipped": n, "bytes_downloaded": n, "failed": ["vae/x.safetensors"]},
     "loras": [{"name": "x.safetensors", "source": "hf", "sha256": "...", "size_bytes": n,
                "state": "ok"|"failed", "error": "..."}]}     # the LoRAs RP_LORAS asked for

Writers take an flock on `<file>.lock` and replace the file atomically, so a reader never sees
half a document and two writers never lose each other's fields.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rp_agent import clock
from rp_agent.keys import boot_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

BOOT_STATUS_ENV = "RP_BOOT_STATUS"
PHASES = (
    "container_started",
    "models_started",
    "models_verified",
    "comfyui_started",
    "comfyui_ready",
)


def status_path(environ: Mapping[str, str] | None = None) -> Path | None:
    env = os.environ if environ is None else environ
    value = env.get(BOOT_STATUS_ENV)
    return Path(value) if value else None


def read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update(
    path: Path,
    *,
    phase: str | None = None,
    models: Mapping[str, Any] | None = None,
    loras: Sequence[Mapping[str, Any]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Records `phase` (first time only: a restarted step keeps its first timestamp) and/or
    replaces the `models` / `loras` section. Returns the document written."""
    now = clock.wall() if now is None else now  # the pod's clock: phases are only subtracted
    with _locked(path):
        data = read(path)
        pod_id = os.environ.get("RUNPOD_POD_ID")
        if pod_id:
            data["pod_id"] = pod_id
        phases = data.setdefault("phases", {})
        if phase is not None:
            phases.setdefault(phase, now)
        if models is not None:
            data["models"] = dict(models)
        if loras is not None:
            data["loras"] = [dict(lora) for lora in loras]
        data["updated"] = now
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, path)
    return data


class BootPublisher:
    """Copies the boot status file to `{prefix}/_rp/boot/{pod_id}.json` whenever it changed
    (checked every `interval` seconds, and once more at stop). Best effort: a failed write is
    retried at the next check."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        pod_id: str,
        prefix: str,
        path: Path,
        interval: float = 2.0,
    ) -> None:
        self.client, self.bucket, self.path, self.interval = client, bucket, path, interval
        self.key = boot_key(pod_id, prefix)
        self._published: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="boot-status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.publish()

    def _run(self) -> None:
        self.publish()
        while not self._stop.wait(self.interval):
            self.publish()

    def publish(self) -> bool:
        """Writes the file's current content if it changed since the last write."""
        try:
            stat = self.path.stat()
            body = self.path.read_bytes()
        except OSError:
            return False
        version = (stat.st_mtime_ns, stat.st_size)
        if version == self._published:
            return False
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json"
            )
        except Exception as exc:
            log.warning("could not write the boot status to %s (%s); will retry", self.key, exc)
            return False
        self._published = version
        return True
