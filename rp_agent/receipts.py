"""Upload receipts: the pod's own record of what it put in the bucket, and when.

A receipt object `{prefix}/_rp/receipts/{pod}/{seq:08d}.jsonl` lists, one JSON line per object,
the key, size, sha256, the file's close time, the upload's start and the moment the upload
call returned (the object was durable and visible then: R2 has strong read-after-write).

Those three times are stamps of the pod's wall clock, which may be minutes off the pipeline's:
they order a pod's own uploads and nothing more. What a reader may subtract comes as durations,
each the difference of two readings of the pod's clock: `latency_s` (file closed -> object
durable, transfer included) and `age_s` (object durable -> this receipt written). A reader places
an upload on its own clock as "when I first saw the receipt, minus age_s", or on R2's as the
receipt object's Last-Modified minus age_s; never by comparing `upload_done` with its clock. Receipts are batched: one object per flush, covering every upload that finished since
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

from rp_agent import clock
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
    # Seconds from upload_done to the receipt's write, on the pod's clock (None: an old receipt).
    age_s: float | None = None

    @property
    def upload_latency_s(self) -> float | None:
        """File closed -> object durable in the bucket, both on the pod's clock (never < 0: a
        clock stepped back between the two readings counts as no time)."""
        if self.upload_start is None:
            return None
        return max(0.0, self.upload_done - self.close_time)

    def as_json(self, written_at: float | None = None) -> dict[str, object]:
        """The receipt line; `written_at` (the pod's clock at the write) gives `age_s`."""
        age = None if written_at is None else round(max(0.0, written_at - self.upload_done), 3)
        latency = self.upload_latency_s
        return {
            "v": RECEIPT_VERSION,
            "key": self.key,
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "close_time": self.close_time,
            "upload_start": self.upload_start,
            "upload_done": self.upload_done,
            "latency_s": None if latency is None else round(latency, 4),
            "age_s": age,
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


def encode(receipts: Iterable[Receipt], written_at: float | None = None) -> bytes:
    return b"".join(
        json.dumps(r.as_json(written_at), separators=(",", ":")).encode() + b"\n" for r in receipts
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
            age = item.get("age_s")
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
                    age_s=float(age) if age is not None else None,
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


class SequenceFloor:
    """The lowest sequence number a receipt (or log object) may use: past the highest one in the
    bucket, so an agent whose state dir was lost cannot overwrite earlier objects. Read from R2
    when first needed and retried until R2 answers; `get()` raises while it cannot."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        queue: UploadQueue,
        counter: str,
        key_of: Callable[[int], str],
        listed_prefix: str,
    ) -> None:
        self.client, self.bucket, self.queue, self.counter = client, bucket, queue, counter
        self.key_of, self.listed_prefix = key_of, listed_prefix
        self._value: int | None = None

    def get(self) -> int:
        if self._value is None:
            known = self.queue.counter(self.counter)
            after = self.key_of(known) if known else None
            self._value = last_remote_seq(self.client, self.bucket, self.listed_prefix, after) + 1
        return self._value


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
        self._floor = SequenceFloor(
            client,
            bucket,
            queue,
            RECEIPT_COUNTER,
            lambda seq: receipt_key(pod_id, seq, prefix),
            receipts_prefix(pod_id, prefix),
        )
        self._thread: threading.Thread | None = None
        self.receipts_written = 0

    def start(self) -> None:
        """Run in the background; receipts a previous run owed are written first. Nothing here
        waits for R2: a bucket that fails under `_rp/` must not keep outputs from uploading."""
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
                seq = self.queue.next_seq(RECEIPT_COUNTER, self._floor.get())
                key = receipt_key(self.pod_id, seq, self.prefix)
                body = encode((from_row(row) for row in rows), written_at=clock.wall())
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
