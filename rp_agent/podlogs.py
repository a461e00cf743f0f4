"""Ship the pod's log lines to the bucket so the Dagster run that uses the pod can show them.

Sources: the agent's own log records, and the files named in `RP_AGENT_LOG_FILES` (ComfyUI's
and start.sh's output), read from where the previous flush stopped (offsets kept in the queue
database, so a restarted agent does not ship them twice). Every `interval` seconds the new lines
go into one object `{prefix}/_rp/logs/{pod}/{seq:08d}.jsonl` (JSON lines `{t, src, level, msg}`).

Bounded: at most `max_lines` lines per object (the rest are counted in a "dropped" line), a
line is cut at `max_line_len`, a file that grew by more than `max_file_bytes` since the last
flush is skipped to its end; progress bars (`\\r` updates) keep only their last state. Every
line goes through the secret filter before it leaves the pod. While R2 fails (the whole bucket
or only `_rp/`) nothing is lost: the agent's lines stay in the bounded buffer and the files'
offsets are only saved after a successful write, so the next flush sends them. Lines buffered in
memory when the agent is killed are lost (file lines are re-read).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from rp_agent import clock
from rp_agent.keys import log_key, logs_prefix
from rp_agent.queue import UploadQueue
from rp_agent.receipts import SequenceFloor
from rp_agent.redact import Redactor

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

LOG_FILES_ENV = "RP_AGENT_LOG_FILES"
LOG_COUNTER = "log_seq"


def parse_log_files(text: str | None) -> list[Path]:
    """`"/a.log, /b.log"` (commas, colons or spaces) -> paths."""
    if not text:
        return []
    items = text.replace(",", " ").replace(":", " ").split()
    return [Path(item).expanduser() for item in items]


class _Collect(logging.Handler):
    """Buffers the agent's own records (never blocks, never raises)."""

    def __init__(self, buffer: deque[dict[str, object]]) -> None:
        super().__init__(level=logging.INFO)
        self.buffer = buffer

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(__name__):
            return  # the shipper's own complaints would feed themselves
        try:
            msg = record.getMessage()
        except Exception:
            return
        self.buffer.append(
            {"t": record.created, "src": "agent", "level": record.levelname, "msg": msg}
        )


class LogShipper:
    def __init__(
        self,
        client: S3Client,
        bucket: str,
        queue: UploadQueue,
        pod_id: str,
        prefix: str,
        files: list[Path],
        *,
        interval: float = 2.0,
        max_lines: int = 500,
        max_line_len: int = 2000,
        max_file_bytes: int = 256 * 1024,
        redactor: Redactor | None = None,
    ) -> None:
        self.client, self.bucket, self.queue = client, bucket, queue
        self.pod_id, self.prefix, self.files = pod_id, prefix, files
        self.interval, self.max_lines, self.max_line_len = interval, max_lines, max_line_len
        self.max_file_bytes = max_file_bytes
        self.redact = redactor or Redactor()
        self._buffer: deque[dict[str, object]] = deque(maxlen=10 * max_lines)
        self.handler = _Collect(self._buffer)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._floor = SequenceFloor(
            client,
            bucket,
            queue,
            LOG_COUNTER,
            lambda seq: log_key(pod_id, seq, prefix),
            logs_prefix(pod_id, prefix),
        )
        self._flush_lock = threading.Lock()

    def start(self) -> None:
        """Collect and ship in the background; nothing here waits for R2 (lines gathered while
        R2 fails stay buffered, bounded, and go out once it answers)."""
        logging.getLogger("rp_agent").addHandler(self.handler)
        self._thread = threading.Thread(target=self._run, name="logs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        logging.getLogger("rp_agent").removeHandler(self.handler)
        self._flush_logged()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush_logged()

    def _flush_logged(self) -> None:
        try:
            self.flush()
        except Exception as exc:
            log.warning("could not ship pod log lines (%s); will retry", exc)

    def flush(self) -> int:
        """Write one log object with the lines gathered since the last flush; returns lines."""
        with self._flush_lock:
            own: list[dict[str, object]] = []
            while self._buffer:
                own.append(self._buffer.popleft())
            offsets: dict[str, int] = {}
            lines = list(own)
            for path in self.files:
                lines += self._read_file(path, offsets)
            if not lines:
                self._save_offsets(offsets)
                return 0
            lines.sort(key=lambda item: float(item["t"]))  # type: ignore[arg-type]
            dropped = len(lines) - self.max_lines
            if dropped > 0:
                lines = lines[: self.max_lines]
                lines.append(
                    {
                        "t": clock.wall(),
                        "src": "agent",
                        "level": "WARNING",
                        "msg": f"{dropped} log line(s) dropped (rate limit)",
                    }
                )
            for item in lines:
                item["msg"] = self.redact(str(item["msg"]))[: self.max_line_len]
            body = b"".join(
                json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in lines
            )
            try:
                seq = self.queue.next_seq(LOG_COUNTER, self._floor.get())
                self.client.put_object(
                    Bucket=self.bucket,
                    Key=log_key(self.pod_id, seq, self.prefix),
                    Body=body,
                    ContentType="application/x-ndjson",
                )
            except Exception:
                # R2 failed: the agent's own lines go back in the (bounded) buffer and the files'
                # offsets stay unsaved, so the next flush sends both.
                self._buffer.extendleft(reversed(own))
                raise
            self._save_offsets(offsets)
            return len(lines)

    def _read_file(self, path: Path, offsets: dict[str, int]) -> list[dict[str, object]]:
        name = f"log_offset:{path}"
        try:
            size = os.stat(path).st_size
        except OSError:
            return []
        start = self.queue.counter(name) or 0
        if size < start:
            start = 0  # truncated or replaced: read it from the top
        lines: list[dict[str, object]] = []
        if size - start > self.max_file_bytes:
            skipped = size - start - self.max_file_bytes
            start = size - self.max_file_bytes
            lines.append(
                {"t": clock.wall(), "src": path.stem, "level": "WARNING",
                 "msg": f"{skipped} byte(s) of {path.name} skipped (rate limit)"}
            )  # fmt: skip
        if size == start:
            return lines
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(size - start)
        end = data.rfind(b"\n")
        if end < 0:
            return lines  # no complete line yet
        offsets[name] = start + end + 1
        now = clock.wall()
        for raw in data[:end].split(b"\n"):
            text = raw.decode("utf-8", "replace").rsplit("\r", 1)[-1].rstrip()
            if text:
                lines.append({"t": now, "src": path.stem, "level": "INFO", "msg": text})
        return lines

    def _save_offsets(self, offsets: dict[str, int]) -> None:
        for name, value in offsets.items():
            self.queue.set_counter(name, value)
