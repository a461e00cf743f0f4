"""Read what a pod reports about itself in R2: upload receipts and log lines (see rp_agent).

Receipts are read incrementally: per pod, the process remembers the last receipt key it read
and lists only what comes after it (`StartAfter`), so a poll costs one LIST that normally
returns nothing. The cache is shared by every thread of the process (one lock per pod), so
per-pod worker threads can wait for their videos at the same time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rp_agent.heartbeat import STALE_AFTER_S
from rp_agent.lease import storage_age
from rp_agent.receipts import Receipt, decode
from rp_agent.redact import Redactor
from rp_pipeline.integrations.r2.keys import heartbeat_key, logs_prefix, receipts_prefix, seq_of
from rp_pipeline.integrations.r2.resource import R2Resource

log = logging.getLogger(__name__)


def iter_objects(r2: R2Resource, prefix: str, start_after: str | None) -> Iterator[str]:
    """Keys under `prefix` after `start_after`, in key order."""
    for page in r2.iter_keys(prefix, start_after or None):
        yield from page.keys


@dataclass
class _PodBook:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_key: str = ""
    # Latest receipt per relative path (a rewritten file is listed again, later).
    by_path: dict[str, Receipt] = field(default_factory=dict)
    # When each path's object reached R2, on this process's clock (see `landed_at`).
    landed: dict[str, float] = field(default_factory=dict)


_books: dict[tuple[str, str, str, str], _PodBook] = {}
_books_lock = threading.Lock()


def _book(r2: R2Resource, pod_id: str) -> _PodBook:
    ident = (r2.endpoint, r2.bucket, r2.prefix, pod_id)
    with _books_lock:
        return _books.setdefault(ident, _PodBook())


def refresh_receipts(r2: R2Resource, pod_id: str) -> _PodBook:
    """Read the pod's receipts written since the last call (any thread)."""
    book = _book(r2, pod_id)
    with book.lock:
        for key in iter_objects(r2, receipts_prefix(pod_id, r2.prefix), book.last_key or None):
            seq = seq_of(key)
            if seq is None:
                continue
            body = r2.get_bytes(key)
            read_at = time.time()
            for receipt in decode(body, seq):
                known = book.by_path.get(receipt.path)
                # Later receipt objects win (the pod's clock may step back between uploads).
                if known is None or receipt.seq >= known.seq:
                    book.by_path[receipt.path] = receipt
                    book.landed[receipt.path] = read_at - (receipt.age_s or 0.0)
            book.last_key = key
    return book


def landed_at(r2: R2Resource, pod_id: str, receipt: Receipt) -> float:
    """When the receipt's object reached R2, on this process's clock: when the receipt was read,
    less how long it waited on the pod (a duration the pod measured), so the pod's clock never
    meets the run's. Now, for a receipt this process has not read."""
    book = _book(r2, pod_id)
    with book.lock:
        return book.landed.get(receipt.path, time.time())


def find_receipt(r2: R2Resource, pod_id: str, relpath: str) -> Receipt | None:
    book = refresh_receipts(r2, pod_id)
    with book.lock:
        return book.by_path.get(relpath)


def heartbeat_age(r2: R2Resource, pod_id: str) -> float | None:
    """How long ago the pod's agent last wrote its heartbeat, on R2's clock (None: it never
    wrote one, e.g. an image whose agent has no heartbeat, or R2 did not answer)."""
    try:
        response = r2.client.head_object(Bucket=r2.bucket, Key=heartbeat_key(pod_id, r2.prefix))
    except Exception:  # no object, or R2 failing: no verdict either way
        return None
    age_s, storage_now = storage_age(response)
    return age_s if storage_now is not None else None


def wait_for_receipt(
    r2: R2Resource,
    pod_id: str,
    relpath: str,
    deadline_s: float,
    poll_s: float = 0.1,
    stale_after_s: float = STALE_AFTER_S,
) -> Receipt | None:
    """The pod's receipt for `relpath` (relative to ComfyUI's output dir), or None once
    `deadline_s` has passed without one, or sooner once the agent's heartbeat is older than
    `stale_after_s` (the agent is gone: waiting out the deadline would only bill the pod)."""
    give_up = time.monotonic() + deadline_s
    next_pulse = time.monotonic()
    while True:
        found = find_receipt(r2, pod_id, relpath)
        if found is not None or time.monotonic() >= give_up:
            return found
        if time.monotonic() >= next_pulse:
            next_pulse = time.monotonic() + 1.0
            age = heartbeat_age(r2, pod_id)
            if age is not None and age > stale_after_s:
                # One more look: the receipt may have landed just before the agent stopped.
                found = find_receipt(r2, pod_id, relpath)
                if found is None:
                    log.warning(
                        "pod %s: its agent's heartbeat is %.0f s old: not waiting for its "
                        "receipt for %s",
                        pod_id,
                        age,
                        relpath,
                    )
                return found
        time.sleep(poll_s)


# -- pod logs -----------------------------------------------------------------------------------


@dataclass
class LogCursor:
    """Where `forward_pod_logs` stopped for one pod: pass it back in on the next call."""

    last_key: str = ""
    lines_forwarded: int = 0
    dropped: int = 0
    agent_restarts: int = 0  # restart lines of the pod's supervisor seen (fleet.podlogs)


_LEVELS = {"DEBUG": logging.DEBUG, "WARNING": logging.WARNING, "ERROR": logging.ERROR}


def forward_pod_logs(
    r2: R2Resource,
    pod_id: str,
    since: LogCursor | None,
    log: Any,
    *,
    max_lines: int = 200,
    redactor: Redactor | None = None,
) -> LogCursor:
    """Send the pod's log lines shipped since `since` to `log` (e.g. `context.log`), at most
    `max_lines` per call (the rest are counted, not sent), secrets filtered again with this
    process's environment. Returns the cursor for the next call; cheap to call every few
    seconds (one LIST that normally returns nothing)."""
    cursor = since or LogCursor()
    redact = redactor or Redactor()
    sent = dropped = 0
    for key in iter_objects(r2, logs_prefix(pod_id, r2.prefix), cursor.last_key or None):
        for raw in r2.get_bytes(key).splitlines():
            try:
                item = json.loads(raw)
                text = f"[pod {pod_id} {item.get('src', '?')}] {redact(str(item['msg']))}"
            except (ValueError, KeyError, TypeError):
                continue
            if sent >= max_lines:
                dropped += 1
                continue
            level = _LEVELS.get(str(item.get("level")), logging.INFO)
            {logging.WARNING: log.warning, logging.ERROR: log.error}.get(level, log.info)(text)
            sent += 1
        cursor.last_key = key
    if dropped:
        log.warning(f"[pod {pod_id}] {dropped} log line(s) not shown (rate limit)")
    cursor.lines_forwarded += sent
    cursor.dropped += dropped
    return cursor
