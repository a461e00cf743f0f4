"""Upload receipts: the pod's own record of what it put in the bucket, and when.

A receipt object `{prefix}/_rp/receipts/{pod}/{seq:08d}.jsonl` lists, one JSON line per object,
the key, size, sha256, the file's close time, the upload's start and the moment the upload
call returned (the object was durable and visible then: R2 has strong read-after-write). All
three times are the pod's clock, so `upload_done - close_time` is a measured latency, transfer
included. Receipts are batched: one object per flush, covering every upload that finished since
the last one (a burst of 300 files costs a handful of receipts, a lone video one).

Crash safety: a receipt is written only for queue rows already `done` (their upload returned),
and the rows are marked as receipted only after the receipt PUT returned. A crash in between
lists those rows again in the next receipt (readers keep the latest line per key); sequence
numbers are committed before use, so a crash can leave a gap but never reuses a number.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rp_agent.keys import receipt_key, receipts_prefix, seq_of
from rp_agent.queue import ReceiptRow, UploadQueue

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

RECEIPT_VERSION = 1
RECEIPT_COUNTER = "receipt_seq"
MAX_PER_RECEIPT = 1000


@dataclass(frozen=True)
class Receipt:
    """One uploaded (or already present) object, as the pod measured it."""

    key: str
    path: str  # relative to the watch dir (ComfyUI's subfolder/filename)
    size: int
    sha256: str
    close_time: float
    upload_start: float | None  # None: the bucket already held this content, nothing was sent
    upload_done: float
    seq: int = 0  # the receipt object that listed it

    @property
    def upload_latency_s(self) -> float | None:
        """File closed -> object durable in the bucket, both on the pod's clock."""
        if self.upload_start is None:
            return None
        return self.upload_done - self.close_time

    def as_json(self) -> dict[str, object]:
        return {
            "v": RECEIPT_VERSION,
            "key": self.key,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "close_time": self.close_time,
            "upload_start": self.upload_start,
            "upload_done": self.upload_done,
        }


def from_row(row: ReceiptRow) -> Receipt:
    return Receipt(
        key=row.key,
        path=row.display,
        size=row.size,
        sha256=row.sha256,
        close_time=row.close_time,
        upload_start=row.upload_start,
        upload_done=row.upload_done,
    )


def encode(receipts: Iterable[Receipt]) -> bytes:
    return b"".join(
        json.dumps(r.as_json(), separators=(",", ":")).encode() + b"\n" for r in receipts
    )


def decode(data: bytes, seq: int) -> list[Receipt]:
    """The receipts of one object; lines of an unknown version or shape are skipped."""
    found = []
    for line in data.splitlines():
        try:
            item = json.loads(line)
            if item.get("v") != RECEIPT_VERSION:
                continue
            start = item.get("upload_start")
            found.append(
                Receipt(
                    key=str(item["key"]),
                    path=str(item["path"]),
                    size=int(item["size"]),
                    sha256=str(item["sha256"]),
                    close_time=float(item["close_time"]),
                    upload_start=float(start) if start is not None else None,
                    upload_done=float(item["upload_done"]),
                    seq=seq,
                )
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("skipping a malformed line in receipt %d", seq)
    return found


def last_remote_seq(client: S3Client, bucket: str, prefix: str, after: str | None) -> int:
    """Highest receipt number already in the bucket under `prefix` (0 when none)."""
    highest = 0
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if after:
        kwargs["StartAfter"] = after
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):  # type: ignore[arg-type]
        for obj in page.get("Contents", []):
            highest = max(highest, seq_of(obj["Key"]) or 0)
    return highest


class ReceiptWriter:
    """Background thread that turns finished uploads into receipt objects.

    `notify()` after each finished upload; the thread then waits (at most `window` seconds)
    while other uploads are still running, so a burst shares receipts, and writes one.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        queue: UploadQueue,
        pod_id: str,
        prefix: str,
        busy: Callable[[], bool],
        window: float = 0.25,
    ) -> None:
        self.client, self.bucket, self.queue = client, bucket, queue
        self.pod_id, self.prefix, self.busy, self.window = pod_id, prefix, busy, window
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flush_lock = threading.Lock()
        self._floor = 1
        self._thread: threading.Thread | None = None
        self.receipts_written = 0

    def start(self) -> None:
        """Continue after the highest number in the bucket (a lost state dir cannot overwrite
        earlier receipts), then write receipts a previous run owed, then run in the background."""
        known = self.queue.counter(RECEIPT_COUNTER)
        after = receipt_key(self.pod_id, known, self.prefix) if known else None
        prefix = receipts_prefix(self.pod_id, self.prefix)
        self._floor = last_remote_seq(self.client, self.bucket, prefix, after) + 1
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)
        self._thread.start()
        self._wake.set()  # rows done before a crash get their receipt now

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread and write what is owed (uploads have finished by now)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush_logged()

    def _run(self) -> None:
        while not self._stop.is_set():
            # The timeout retries a flush that failed (endpoint briefly down).
            self._wake.wait(timeout=2.0)
            self._wake.clear()
            give_up = time.monotonic() + self.window
            while self.busy() and time.monotonic() < give_up and not self._stop.is_set():
                self._wake.wait(timeout=0.02)
                self._wake.clear()
            if self._stop.is_set():
                return
            self.flush_logged()

    def flush_logged(self) -> int:
        try:
            return self.flush()
        except Exception as exc:  # the rows stay unreceipted; the next flush retries
            log.warning("could not write an upload receipt (%s); will retry", exc)
            return 0

    def flush(self) -> int:
        """Write receipts for every done row not yet covered; returns how many rows."""
        total = 0
        with self._flush_lock:
            while rows := self.queue.unreceipted(MAX_PER_RECEIPT):
                seq = self.queue.next_seq(RECEIPT_COUNTER, self._floor)
                key = receipt_key(self.pod_id, seq, self.prefix)
                body = encode(from_row(row) for row in rows)
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/x-ndjson"
                )
                self.queue.mark_receipted(seq, rows)
                self.receipts_written += 1
                total += len(rows)
                log.debug("receipt %d lists %d object(s)", seq, len(rows))
                if len(rows) < MAX_PER_RECEIPT:
                    break
        return total
