"""Download progress: log lines a person can read and a program can parse, and the boot status.

Every few seconds, while anything downloads (GB = 10^9 bytes, MB/s = 10^6 bytes a second):

    [models] downloading 31.2/80.4 GB, 410.0 MB/s, 2 min left, 3/12 files
    [models] file diffusion_models/x.safetensors 5.1/13.0 GB, 120.0 MB/s, 1 min left

"N s left" under two minutes, "N min left" above, "? left" before a rate is known. The
totals count bytes a previous (interrupted) start already fetched as done; the rate is that
of the last ~10 seconds.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rp_agent import bootstatus

WINDOW_S = 10.0


def gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def time_left(remaining: int, rate: float) -> str:
    if remaining <= 0:
        return "0 s left"
    if rate <= 0:
        return "? left"
    seconds = remaining / rate
    return f"{seconds:.0f} s left" if seconds < 120 else f"{seconds / 60:.0f} min left"


@dataclass
class _Rate:
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def rate(self, now: float, counter: int) -> float:
        self.samples.append((now, counter))
        while len(self.samples) > 2 and now - self.samples[0][0] > WINDOW_S:
            self.samples.popleft()
        t0, c0 = self.samples[0]
        return (counter - c0) / (now - t0) if now > t0 else 0.0


@dataclass
class _File:
    size: int
    done: int
    fetched: int = 0  # bytes received by this process
    rate: _Rate = field(default_factory=_Rate)
    finished: bool = False


class Progress:
    def __init__(
        self,
        emit: Callable[[str], None],
        files_total: int,
        status_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.files_total, self.status_file, self.clock = (
            emit,
            files_total,
            status_file,
            clock,
        )
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._rate = _Rate()
        self.fetched = 0
        self.files_done = 0
        self.files_skipped = 0
        self.failed: list[str] = []

    def add_file(self, relpath: str, size: int, done: int) -> None:
        with self._lock:
            self._files[relpath] = _File(size, done)

    def advance(self, relpath: str, nbytes: int) -> None:
        with self._lock:
            entry = self._files[relpath]
            entry.done += nbytes
            entry.fetched += nbytes
            self.fetched += nbytes

    def rewind(self, relpath: str, nbytes: int) -> None:
        """Bytes that must be fetched again (a range restarted from its beginning)."""
        with self._lock:
            self._files[relpath].done -= nbytes

    def finish(self, relpath: str | None, ok: bool) -> None:
        with self._lock:
            if relpath in self._files:
                self._files[relpath].finished = True
            if ok:
                self.files_done += 1
            elif relpath:
                self.failed.append(relpath)

    def skipped(self) -> None:
        with self._lock:
            self.files_done += 1
            self.files_skipped += 1

    def snapshot(self, state: str) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            total = sum(f.size for f in self._files.values())
            done = sum(f.done for f in self._files.values())
            rate = self._rate.rate(now, self.fetched)
            active = [
                (name, f, f.rate.rate(now, f.fetched))
                for name, f in self._files.items()
                if not f.finished
            ]
            files_done, skipped, failed = self.files_done, self.files_skipped, list(self.failed)
            fetched = self.fetched
        eta = (
            (total - done) / rate if rate > 0 and total > done else (0.0 if total <= done else None)
        )
        return {
            "state": state,
            "bytes_done": done,
            "bytes_total": total,
            "rate_bps": round(rate),
            "eta_s": None if eta is None else round(eta),
            "files_total": self.files_total,
            "files_done": files_done,
            "files_skipped": skipped,
            "bytes_downloaded": fetched,
            "failed": failed,
            "_active": active,
        }

    def report(self, state: str = "downloading", lines: bool = True) -> dict[str, Any]:
        snap = self.snapshot(state)
        active = snap.pop("_active")
        if lines and active:
            done, total, rate = snap["bytes_done"], snap["bytes_total"], snap["rate_bps"]
            self.emit(
                f"downloading {gb(done)}/{gb(total)} GB, {rate / 1e6:.1f} MB/s, "
                f"{time_left(total - done, rate)}, {snap['files_done']}/{self.files_total} files"
            )
            for name, f, file_rate in active:
                self.emit(
                    f"file {name} {gb(f.done)}/{gb(f.size)} GB, {file_rate / 1e6:.1f} MB/s, "
                    f"{time_left(f.size - f.done, file_rate)}"
                )
        if self.status_file is not None:
            try:
                bootstatus.update(self.status_file, models=snap)
            except OSError as exc:
                self.emit(f"could not write the boot status file {self.status_file}: {exc}")
        return snap

    def run_every(
        self, interval: float, stop: threading.Event, also: Callable[[], None] | None = None
    ) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(interval):
                if also is not None:
                    also()
                self.report()

        thread = threading.Thread(target=loop, name="models-progress", daemon=True)
        thread.start()
        return thread
