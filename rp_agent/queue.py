"""Durable upload queue: one SQLite row per file path, in WAL mode so a kill loses nothing.

Rows move pending -> uploading -> done | failed. A row left `uploading` by a killed agent is
set back to pending at start. `generation` changes whenever the file is seen with new
size/mtime, so a worker finishing an upload of older content cannot mark the newer content done.
The `objects` table remembers which sha256 each key holds in the bucket: the same content is
never uploaded twice, new content under the same key always is.
A done row keeps `receipt_seq` NULL until a receipt listing it is in the bucket (see
receipts.py); `counters` holds the last receipt / log sequence numbers used, which only grow.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from rp_agent import clock

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path BLOB PRIMARY KEY,          -- os.fsencode(relative path): exact bytes, any encoding
    display TEXT NOT NULL,          -- UTF-8 safe form (undecodable bytes as %XX)
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    sha256 TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'uploading', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    generation INTEGER NOT NULL DEFAULT 0,
    check_remote INTEGER NOT NULL DEFAULT 1,  -- HEAD the key before uploading (see observe)
    close_time REAL NOT NULL,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    upload_start REAL,
    uploaded_at REAL,
    updated_at REAL NOT NULL,
    receipt_seq INTEGER             -- receipt object that lists this done row (NULL: none yet)
);
CREATE INDEX IF NOT EXISTS files_state ON files (state, next_attempt_at);
CREATE TABLE IF NOT EXISTS objects (
    key TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    uploaded_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

STATES = ("pending", "uploading", "done", "failed")


@dataclass(frozen=True)
class Job:
    """A claimed row: everything a worker needs to upload one file version."""

    path: str  # relative path as str (surrogate escapes preserved)
    display: str
    key: str
    size: int
    mtime: float
    close_time: float
    attempts: int
    generation: int
    check_remote: bool


@dataclass(frozen=True)
class ReceiptRow:
    """A done row as a receipt lists it (`raw_path` + `generation` identify the row)."""

    raw_path: bytes
    generation: int
    display: str
    key: str
    size: int
    sha256: str
    close_time: float
    upload_start: float | None  # None: the bucket already held this content; nothing sent
    upload_done: float


@dataclass(frozen=True)
class FileRow:
    display: str
    key: str
    size: int
    state: str
    attempts: int
    sha256: str | None
    last_error: str | None
    close_time: float
    upload_start: float | None
    uploaded_at: float | None
    updated_at: float


class UploadQueue:
    """Thread-safe: one connection guarded by a lock (the queue is small and writes are short)."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a killed process (only power loss can drop the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "receipt_seq" not in columns:  # a queue made by an agent without receipts
            self._db.execute("ALTER TABLE files ADD COLUMN receipt_seq INTEGER")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS files_unreceipted ON files (state) WHERE receipt_seq IS NULL"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def recover(self, retry_failed: bool) -> int:
        """At start: rows a killed agent left `uploading` (and, on request, failed ones) retry."""
        states = ("uploading", "failed") if retry_failed else ("uploading",)
        marks = ",".join("?" * len(states))
        with self._lock:
            # An upload cut short may still have completed: HEAD before uploading it again.
            cur = self._db.execute(
                f"UPDATE files SET state='pending', next_attempt_at=0, attempts=0, "
                f"check_remote=1, updated_at=? WHERE state IN ({marks})",
                (clock.wall(), *states),
            )
            return cur.rowcount

    def requeue_failed(self) -> int:
        """Failed rows become pending again (with their remote check); returns how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE files SET state='pending', next_attempt_at=0, attempts=0, check_remote=1, "
                "updated_at=? WHERE state='failed'",
                (clock.wall(),),
            )
            return cur.rowcount

    def known(self, path: str, size: int, mtime: float) -> bool:
        """True when this exact file version (size + mtime) is already queued or handled."""
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime FROM files WHERE path=?", (os.fsencode(path),)
            ).fetchone()
        # A failed version is not retried by rescans (that would hammer a missing bucket);
        # the next agent start retries it (`recover`).
        return bool(row) and row[0] == size and row[1] == mtime

    def observe(
        self,
        path: str,
        display: str,
        key: str,
        size: int,
        mtime: float,
        close_time: float,
        check_remote: bool = True,
    ) -> bool:
        """Queue this file version unless already known; True when it became pending.

        `check_remote=False` is for files the agent saw being written while it ran: nothing can
        have uploaded that content before, so the HEAD round trip is skipped. Files found by a
        rescan (e.g. written while the agent was down, or a new pod with an empty queue) keep
        it, so content already in the bucket is never uploaded twice.
        """
        now = clock.wall()
        raw = os.fsencode(path)
        with self._lock:
            row = self._db.execute("SELECT size, mtime FROM files WHERE path=?", (raw,)).fetchone()
            if row and row[0] == size and row[1] == mtime:
                return False
            self._db.execute(
                """INSERT INTO files (path, display, key, size, mtime, state, attempts, generation,
                       check_remote, close_time, enqueued_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, 'pending', 0, 0, ?, ?, ?, ?)
                   ON CONFLICT (path) DO UPDATE SET key=excluded.key, size=excluded.size,
                       mtime=excluded.mtime, sha256=NULL, state='pending', attempts=0,
                       last_error=NULL, generation=files.generation + 1,
                       check_remote=excluded.check_remote,
                       close_time=excluded.close_time, next_attempt_at=0,
                       enqueued_at=excluded.enqueued_at, upload_start=NULL, uploaded_at=NULL,
                       updated_at=excluded.updated_at, receipt_seq=NULL""",
                (raw, display, key, size, mtime, int(check_remote), close_time, now, now),
            )
            return True

    def claim(self, limit: int, exclude: set[str]) -> list[Job]:
        """Mark up to `limit` due pending rows `uploading` and return them (oldest first)."""
        if limit <= 0:
            return []
        now = clock.wall()
        with self._lock:
            rows = self._db.execute(
                """SELECT path, display, key, size, mtime, close_time, attempts, generation,
                       check_remote FROM files WHERE state='pending' AND next_attempt_at <= ?
                   ORDER BY enqueued_at LIMIT ?""",
                (now, limit + len(exclude)),
            ).fetchall()
            jobs = []
            for raw, display, key, size, mtime, close_time, attempts, gen, check in rows:
                path = os.fsdecode(raw)
                if path in exclude:
                    continue  # an older version of this file is still uploading
                jobs.append(
                    Job(path, display, key, size, mtime, close_time, attempts, gen, bool(check))
                )
                if len(jobs) == limit:
                    break
            self._db.executemany(
                "UPDATE files SET state='uploading', updated_at=? WHERE path=?",
                [(now, os.fsencode(j.path)) for j in jobs],
            )
        return jobs

    def object_sha256(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM objects WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def mark_done(self, job: Job, sha256: str, upload_start: float | None, uploaded: bool) -> bool:
        """Record success; False when the file changed meanwhile (the newer row stays pending).

        One transaction (one WAL commit) for the row and the key's sha256."""
        now = clock.wall()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                cur = self._db.execute(
                    """UPDATE files SET state='done', sha256=?, last_error=NULL, upload_start=?,
                           uploaded_at=?, attempts=attempts + ?, updated_at=?, receipt_seq=NULL
                       WHERE path=? AND generation=?""",
                    (
                        sha256,
                        upload_start,
                        now,
                        int(uploaded),
                        now,
                        os.fsencode(job.path),
                        job.generation,
                    ),
                )
                self._db.execute(
                    """INSERT INTO objects (key, sha256, size, uploaded_at) VALUES (?, ?, ?, ?)
                       ON CONFLICT (key) DO UPDATE SET sha256=excluded.sha256, size=excluded.size,
                           uploaded_at=excluded.uploaded_at""",
                    (job.key, sha256, job.size, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cur.rowcount == 1

    # -- receipts ------------------------------------------------------------------------------

    def unreceipted(self, limit: int = 1000) -> list[ReceiptRow]:
        """Done rows no receipt in the bucket lists yet, in the order they finished."""
        with self._lock:
            fetched = self._db.execute(
                """SELECT path, generation, display, key, size, sha256, close_time, upload_start,
                       uploaded_at FROM files WHERE state='done' AND receipt_seq IS NULL
                   ORDER BY uploaded_at LIMIT ?""",
                (limit,),
            ).fetchall()
        return [ReceiptRow(*row) for row in fetched]

    def mark_receipted(self, seq: int, rows: list[ReceiptRow]) -> None:
        """Rows of a written receipt; a row rewritten meanwhile (new generation) stays out."""
        with self._lock:
            self._db.executemany(
                "UPDATE files SET receipt_seq=? WHERE path=? AND generation=? AND state='done'",
                [(seq, row.raw_path, row.generation) for row in rows],
            )

    def next_seq(self, name: str, at_least: int = 1) -> int:
        """A number for `name` higher than every one handed out before (committed first, so a
        crash can leave a gap but never reuse a number)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            value = max((row[0] + 1) if row else 1, at_least)
            self._db.execute(
                """INSERT INTO counters (name, value) VALUES (?, ?)
                   ON CONFLICT (name) DO UPDATE SET value=excluded.value""",
                (name, value),
            )
        return value

    def counter(self, name: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    def set_counter(self, name: str, value: int) -> None:
        with self._lock:
            self._db.execute(
                """INSERT INTO counters (name, value) VALUES (?, ?)
                   ON CONFLICT (name) DO UPDATE SET value=excluded.value""",
                (name, value),
            )

    def mark_retry(self, job: Job, error: str, delay: float) -> None:
        now = clock.wall()
        with self._lock:
            self._db.execute(
                """UPDATE files SET state='pending', attempts=attempts + 1, last_error=?,
                       next_attempt_at=?, updated_at=? WHERE path=? AND generation=?""",
                (error, now + delay, now, os.fsencode(job.path), job.generation),
            )

    def mark_failed(self, job: Job, error: str) -> None:
        now = clock.wall()
        with self._lock:
            self._db.execute(
                """UPDATE files SET state='failed', attempts=attempts + 1, last_error=?,
                       updated_at=? WHERE path=? AND generation=?""",
                (error, now, os.fsencode(job.path), job.generation),
            )

    def release(self, job: Job) -> None:
        """Put a claimed row back untouched (shutdown before the upload started)."""
        with self._lock:
            self._db.execute(
                "UPDATE files SET state='pending' WHERE path=? AND generation=? AND state='uploading'",
                (os.fsencode(job.path), job.generation),
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({state: n for state, n in rows})
        return counts

    def outstanding(self) -> int:
        """Rows not finished yet (pending, including those waiting for a retry, or uploading)."""
        counts = self.counts()
        return counts["pending"] + counts["uploading"]

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM files WHERE state='pending'"
            ).fetchone()
        return row[0] if row and row[0] is not None else None

    def rows(self, state: str | None = None, limit: int = 1000) -> list[FileRow]:
        query = """SELECT display, key, size, state, attempts, sha256, last_error, close_time,
                      upload_start, uploaded_at, updated_at FROM files"""
        args: tuple[object, ...] = ()
        if state:
            query += " WHERE state=?"
            args = (state,)
        query += " ORDER BY updated_at DESC LIMIT ?"
        with self._lock:
            fetched = self._db.execute(query, (*args, limit)).fetchall()
        return [FileRow(*row) for row in fetched]

    def last_errors(self, limit: int = 10) -> list[FileRow]:
        with self._lock:
            fetched = self._db.execute(
                """SELECT display, key, size, state, attempts, sha256, last_error, close_time,
                      upload_start, uploaded_at, updated_at FROM files
                   WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT ?""",
                (limit,),
            ).fetchall()
        return [FileRow(*row) for row in fetched]
