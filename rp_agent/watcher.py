"""Turn filesystem activity under the watch dir into "this file version is complete" calls.

Fast path: a close-after-write event (`on_closed`) or a rename into place means the writer is
done, so the file is handed on at once. Everything else (created/modified events, files moved
in from outside, files written into a new subdirectory before its watch existed, files found
by a rescan) settles first: it is handed on once its size and mtime have held still for
`settle_seconds`. Rescans at start and every `rescan_interval` catch whatever inotify dropped.

A writer that pauses longer than the settle window without closing gets a partial upload;
its close event then uploads the final content over it (the queue sees a new size/mtime).

A 0-byte file is never trusted on a close event (writers often create, close, then reopen);
it is handed on only after it stayed 0 bytes for the settle window, and is then uploaded as an
empty object. If it grows later, the new version is uploaded again.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from rp_agent.paths import is_candidate, key_safe, relative_to

log = logging.getLogger(__name__)

# The only events the watcher acts on. Passing them to watchdog narrows the inotify mask, so the
# kernel does not report every open and read-only close (each upload reads its file: without the
# filter that alone would double the events per file).
WATCHED_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileMovedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    DirCreatedEvent,
    DirMovedEvent,
]

# (relative path, size, mtime, close time, seen being written while watched)
Sink = Callable[[str, int, float, float, bool], None]
Known = Callable[[str, int, float], bool]


@dataclass
class _Settling:
    size: int
    mtime: float
    changed_at: float
    live: bool  # an event showed it being written (not just found by a rescan)


class _Forward(FileSystemEventHandler):
    """Runs on watchdog's thread: only timestamps events and queues them for the intake thread."""

    def __init__(self, events: queue.Queue[tuple[str, str, float]]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        now = time.time()
        src = os.fsdecode(event.src_path)
        if isinstance(event, FileClosedEvent):
            self.events.put(("closed", src, now))
        elif isinstance(event, FileMovedEvent):
            self.events.put(("moved", os.fsdecode(event.dest_path), now))
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent):
            self.events.put(("changed", src, now))
        elif isinstance(event, DirCreatedEvent):
            self.events.put(("dir", src, now))
        elif isinstance(event, DirMovedEvent):
            self.events.put(("dir", os.fsdecode(event.dest_path), now))


class Watcher:
    def __init__(
        self,
        watch_dir: str,
        extensions: frozenset[str],
        sink: Sink,
        known: Known,
        *,
        settle_seconds: float = 1.0,
        rescan_interval: float = 30.0,
    ) -> None:
        self.watch_dir = watch_dir
        self.extensions = extensions
        self.sink = sink
        self.known = known
        self.settle_seconds = settle_seconds
        self.rescan_interval = rescan_interval
        self._events: queue.Queue[tuple[str, str, float]] = queue.Queue()
        self._settling: dict[str, _Settling] = {}
        # New directories to walk once more after the settle window (see _handle).
        self._dirs_to_recheck: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self.intake_errors = 0  # files that could not be queued (a rescan retries them)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Watch first, then rescan, so a file written in between is caught by one or the other."""
        self._observer = Observer()
        self._observer.schedule(
            _Forward(self._events), self.watch_dir, recursive=True, event_filter=WATCHED_EVENTS
        )
        self._observer.daemon = True
        self._observer.start()
        self._thread = threading.Thread(target=self._run, name="intake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def settling(self) -> int:
        """Files seen but not yet handed on (still being written or within the settle window)."""
        with self._lock:
            return len(self._settling) + self._events.qsize()

    # -- work --------------------------------------------------------------------------------

    def rescan(self, top: str | None = None) -> int:
        """Walk the tree (or `top` inside it); every candidate not already known starts
        settling. Returns how many."""
        found = 0
        for root, dirs, files in os.walk(top or self.watch_dir, onerror=self._walk_error):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                if self._offer(os.path.join(root, name), time.time(), from_rescan=True):
                    found += 1
        return found

    def recheck_new_dirs(self) -> None:
        """Walk each new directory once more when its settle window has passed."""
        now = time.time()
        due = [path for when, path in self._dirs_to_recheck if when <= now]
        if due:
            self._dirs_to_recheck = [(w, p) for w, p in self._dirs_to_recheck if w > now]
            for path in due:
                self.rescan(path)

    def poll(self) -> None:
        """Hand on every settling file that has become stable (the intake thread calls this)."""
        now = time.time()
        with self._lock:
            items = list(self._settling.items())
        for path, entry in items:
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._drop(path)
                continue
            except OSError as exc:
                log.warning("cannot stat %s: %s", self._rel_display(path), exc)
                self._drop(path)
                continue
            if (st.st_size, st.st_mtime) != (entry.size, entry.mtime):
                with self._lock:
                    self._settling[path] = _Settling(st.st_size, st.st_mtime, now, entry.live)
                continue
            quiet_for = now - max(entry.changed_at, st.st_mtime)
            if (
                quiet_for >= self.settle_seconds
                or now - entry.changed_at >= 3 * self.settle_seconds
            ):
                self._drop(path)
                self._emit(path, st.st_size, st.st_mtime, now, entry.live)

    def _run(self) -> None:
        next_rescan = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() >= next_rescan:
                try:
                    self.rescan()
                except Exception:
                    log.exception("rescan of %s failed; will retry", self.watch_dir)
                next_rescan = time.monotonic() + self.rescan_interval
            try:
                kind, path, when = self._events.get(
                    timeout=min(0.1, self.settle_seconds / 4 or 0.1)
                )
                self._handle(kind, path, when)
                while True:  # drain a burst before polling
                    kind, path, when = self._events.get_nowait()
                    self._handle(kind, path, when)
            except queue.Empty:
                pass
            except Exception:
                log.exception("error handling a filesystem event; the next rescan covers it")
            try:
                self.recheck_new_dirs()
                self.poll()
            except Exception:
                log.exception("error checking settling files; the next rescan covers them")

    def _handle(self, kind: str, path: str, when: float) -> None:
        if kind == "dir":
            # Files created or moved in with a directory give no events of their own. A file
            # written between this walk and watchdog's new inotify watch would wait for the
            # periodic rescan, so the directory is walked once more after the settle window.
            for root, dirs, files in os.walk(path, onerror=self._walk_error):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    self._offer(os.path.join(root, name), when)
            self._dirs_to_recheck.append((when + self.settle_seconds, path))
        elif kind in ("closed", "moved"):
            self._offer(path, when, complete=True)
        else:
            self._offer(path, when)

    def _offer(
        self, path: str, when: float, *, complete: bool = False, from_rescan: bool = False
    ) -> bool:
        rel = relative_to(self.watch_dir, path)
        if rel is None or not is_candidate(rel, self.extensions):
            return False
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cannot stat %s: %s", self._rel_display(path), exc)
            return False
        if from_rescan and self.known(rel, st.st_size, st.st_mtime):
            return False
        # Written while watched: mtime is newer than the event that reported it minus a margin.
        live = not from_rescan and st.st_mtime >= when - 5.0
        if complete and st.st_size > 0:
            self._drop(path)
            self._emit(path, st.st_size, st.st_mtime, when, live)
            return True
        with self._lock:
            # Rescans report files as they are; events mean "something just changed".
            changed_at = when if not from_rescan else min(when, st.st_mtime)
            entry = self._settling.get(path)
            if entry is None or not from_rescan:
                self._settling[path] = _Settling(st.st_size, st.st_mtime, changed_at, live)
        return True

    def _emit(self, path: str, size: int, mtime: float, close_time: float, live: bool) -> None:
        rel = relative_to(self.watch_dir, path)
        if rel is None:
            return
        try:
            self.sink(rel, size, mtime, close_time, live)
        except Exception:
            self.intake_errors += 1
            log.exception("could not queue %s; the next rescan retries", self._rel_display(path))

    def _drop(self, path: str) -> None:
        with self._lock:
            self._settling.pop(path, None)

    def _rel_display(self, path: str) -> str:
        return key_safe(relative_to(self.watch_dir, path) or path)

    def _walk_error(self, exc: OSError) -> None:
        log.warning("cannot list %s: %s", exc.filename, exc.strerror)
