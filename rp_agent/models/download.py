"""Parallel, resumable, verified downloads of the selected model files.

Every file is split into byte ranges (DOWNLOAD_CHUNK_MB); DOWNLOAD_STREAMS worker threads take
ranges from one queue, the files earlier in the manifest first, so several files and several
ranges of one large file download at once (a CDN caps the rate of each connection, not of the
pod). Bytes go straight to their offset in `<name>.part` (sized up front, sparse); which bytes
are there is kept in `<name>.part.json`, saved every few seconds and when a range completes, so
a cut connection retries only the rest of its range and a stopped pod resumes where it was.
The record is only ever behind the file, never ahead: a byte is counted after it was written.

A complete part file is checked by size and digest before it gets its final name: the manifest's
pinned sha256, else the hub's own (Hugging Face: the ETag of a HEAD on the resolve URL, read the
way huggingface_hub's get_hf_file_metadata reads it; CivitAI: the model version's file hashes).
A mismatch deletes the part: wrong bytes cannot be fixed by resuming them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rp_agent.models.http import HttpError, request
from rp_agent.models.manifest import Entry
from rp_agent.models.markers import Digest, Markers, file_digest
from rp_agent.models.progress import Progress

MIB = 1024 * 1024
READ_SIZE = MIB
FATAL_STATUSES = (401, 403, 404)
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")
STATE_VERSION = 1


@dataclass
class Settings:
    models_dir: Path
    env: Mapping[str, str]
    streams: int = 8
    chunk_bytes: int = 256 * MIB
    attempts: int = 5
    progress_interval: float = 5.0
    status_file: Path | None = None
    retry_delay: Callable[[int], float] = lambda attempt: float(min(attempt, 5))


class FileFailed(Exception):
    """Ends one file's download; the message names the file and says why."""


def normalize_etag(value: str | None) -> str | None:
    """As huggingface_hub does: drop a weak-validator `W/` prefix and the quotes."""
    if not value:
        return None
    value = value.strip()
    if value[:2].upper() == "W/":
        value = value[2:]
    return value.strip('"').lower() or None


def digest_from_etag(etag: str | None) -> Digest | None:
    """A Hugging Face ETag is the sha256 of an LFS file, the git blob sha1 of any other."""
    if etag and SHA256_HEX.match(etag):
        return Digest("sha256", etag, "hub")
    if etag and SHA1_HEX.match(etag):
        return Digest("git-sha1", etag, "hub")
    return None


@dataclass
class Chunk:
    start: int
    end: int  # exclusive
    done: int = 0

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass
class Job:
    entry: Entry
    dest: Path
    url: str
    headers: dict[str, str]
    digest: Digest | None = None
    size: int = 0
    ranges: bool = True
    chunks: list[Chunk] = field(default_factory=list)
    fd: int = -1
    pending: int = 0
    failed: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    state_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False  # complete or given up: its record must not be written again

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    @property
    def state(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part.json")

    @property
    def rel(self) -> str:
        return self.entry.relpath

    def save_state(self) -> None:
        data = {
            "version": STATE_VERSION,
            "url": self.url,
            "size": self.size,
            "digest": self.digest.value if self.digest else None,
            "chunks": [[c.start, c.end, c.done] for c in self.chunks],
        }
        with self.state_lock:
            if self.closed:
                return
            tmp = self.state.with_name(self.state.name + ".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.state)


class Downloader:
    def __init__(
        self, settings: Settings, log: Callable[[str], None], err: Callable[[str], None]
    ) -> None:
        self.s = settings
        self.log, self.err = log, err
        self.markers = Markers(settings.models_dir)
        self.progress: Progress | None = None
        self.jobs: list[Job] = []
        self._tasks: queue.PriorityQueue[tuple[tuple[int, int], int, Any]] = queue.PriorityQueue()
        self._outstanding = 0
        self._count_lock = threading.Lock()
        self._seq = 0

    # -- auth and hub metadata ---------------------------------------------------------------

    def auth_headers(self, entry: Entry) -> dict[str, str]:
        name = "CIVITAI_API_KEY" if entry.kind == "civitai" else "HF_TOKEN"
        token = self.s.env.get(name) if entry.kind != "url" else None
        return {"Authorization": f"Bearer {token}"} if token else {}

    def hub_digest(self, job: Job) -> Digest | None:
        entry = job.entry
        if entry.sha256:
            return Digest("sha256", entry.sha256, "manifest")
        if entry.kind == "hf":
            return self._hf_digest(job)
        if entry.kind == "civitai":
            return self._civitai_digest(job)
        return None

    def _hf_digest(self, job: Job) -> Digest | None:
        """As huggingface_hub's get_hf_file_metadata: HEAD on the resolve URL following only
        relative redirects (a renamed repo), not the absolute one to the CDN, whose answer carries
        `X-Linked-Etag` (else `ETag`). Retried like a range; a hub that keeps failing fails the
        file rather than let it in unchecked."""
        error = HttpError(0, job.url, "no answer")
        for attempt in range(1, self.s.attempts + 1):
            try:
                resp = self._call("HEAD", job.url, job.headers, follow="relative")
            except HttpError as exc:
                error = exc
            else:
                resp.close()
                if resp.status in FATAL_STATUSES:
                    raise FileFailed(self._status_message(job, resp.status, job.url))
                if resp.status < 400:
                    etag = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag")
                    return digest_from_etag(normalize_etag(etag))
                error = HttpError(resp.status, job.url)
            if attempt < self.s.attempts:
                time.sleep(self.s.retry_delay(attempt))
        raise error

    def _civitai_digest(self, job: Job) -> Digest | None:
        """GET /api/v1/model-versions/{id}: its `files` carry `hashes.SHA256`; the primary file
        is what /api/download/models/{id} serves."""
        version = job.entry.source.removeprefix("civitai:")
        base = job.url.split("/api/download/", 1)[0]
        url = f"{base}/api/v1/model-versions/{version}"
        try:
            resp = self._call("GET", url, job.headers)
            body = resp.read(4 * MIB) if resp.status == 200 else b""
            resp.close()
            files = json.loads(body).get("files", []) if body else []
        except (HttpError, ValueError, AttributeError):
            return None
        files = [f for f in files if isinstance(f, dict)]
        chosen = next((f for f in files if f.get("primary")), files[0] if files else None)
        sha = str((chosen or {}).get("hashes", {}).get("SHA256", "")).lower()
        return Digest("sha256", sha, "civitai") if SHA256_HEX.match(sha) else None

    def _call(self, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        return request(method, url, headers, **kw)

    def _status_message(self, job: Job, status: int, url: str) -> str:
        return f"download failed: {job.rel} (HTTP {status} from {url}; check the name or token)"

    # -- planning ----------------------------------------------------------------------------

    def probe(self, job: Job) -> None:
        """Size and Range support from a one-byte ranged GET."""
        last = ""
        for attempt in range(1, self.s.attempts + 1):
            try:
                resp = self._call("GET", job.url, {**job.headers, "Range": "bytes=0-0"})
            except HttpError as exc:
                last = str(exc)
            else:
                resp.close()
                if resp.status in FATAL_STATUSES:
                    raise FileFailed(self._status_message(job, resp.status, job.url))
                if resp.status == 206:
                    total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                    if total.isdigit():
                        job.size, job.ranges = int(total), True
                        return
                if resp.status == 200 and (resp.headers.get("Content-Length") or "").isdigit():
                    job.size, job.ranges = int(resp.headers["Content-Length"]), False
                    return
                last = f"HTTP {resp.status} from {job.url}"
            if attempt < self.s.attempts:
                time.sleep(self.s.retry_delay(attempt))
        raise FileFailed(f"download failed: {job.rel} ({last}, {self.s.attempts} attempts)")

    def load_state(self, job: Job) -> list[Chunk] | None:
        try:
            data = json.loads(job.state.read_text())
            same = (
                data.get("version") == STATE_VERSION
                and data.get("size") == job.size
                and data.get("digest") == (job.digest.value if job.digest else None)
            )
            chunks = [Chunk(*map(int, c)) for c in data["chunks"]] if same else None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if chunks and job.part.exists() and chunks[-1].end == job.size:
            return chunks
        return None

    def plan(self, job: Job) -> None:
        chunks = self.load_state(job) if job.ranges else None
        if chunks is None and job.state.exists():
            # A record of another version of the file (size or digest changed), or unreadable:
            # its bytes are not a prefix of this one.
            job.part.unlink(missing_ok=True)
            job.state.unlink(missing_ok=True)
        if chunks is None:
            step = self.s.chunk_bytes if job.ranges else max(job.size, 1)
            chunks = [Chunk(s, min(s + step, job.size)) for s in range(0, job.size, step)] or [
                Chunk(0, 0)
            ]
            # A part without a record (the sequential downloader's, or a curl-style copy) holds
            # a prefix of the file: keep it when the server can continue it with ranges.
            with contextlib.suppress(OSError):
                prefix = job.part.stat().st_size if job.ranges else 0
                if prefix > job.size:
                    prefix = 0
                for c in chunks:
                    c.done = max(0, min(c.length, prefix - c.start))
                if prefix:
                    self.log(f"resume   {job.rel} from {prefix} bytes")
        job.chunks = chunks
        job.part.parent.mkdir(parents=True, exist_ok=True)
        job.fd = os.open(job.part, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(job.fd).st_size != job.size:
            os.ftruncate(job.fd, job.size)
        job.save_state()

    def prepare(self, job: Job) -> None:
        try:
            job.digest = self.hub_digest(job)
            self.probe(job)
            if job.size < job.entry.min_mb * MIB:
                raise FileFailed(
                    f"verification failed: {job.rel}: too small: {job.size} bytes, expected at "
                    f"least {job.entry.min_mb} MiB (truncated download or an error page?)"
                )
            if self._existing_is_good(job):
                return
            self.plan(job)
        except HttpError as exc:
            if self._usable_offline(job):
                return
            self._fail(job, f"download failed: {job.rel} ({exc})")
            return
        except FileFailed as exc:
            self._fail(job, str(exc))
            return
        except OSError as exc:
            self._fail(job, f"download failed: {job.rel} ({exc})")
            return
        done = sum(c.done for c in job.chunks)
        assert self.progress is not None
        self.progress.add_file(job.rel, job.size, done)
        if done == 0:
            self.log(f"download {job.rel} ({job.size} bytes, {len(job.chunks)} range(s))")
        todo = [i for i, c in enumerate(job.chunks) if c.done < c.length]
        job.pending = len(todo)
        if not todo:
            self.finish(job)
            return
        index = self.jobs.index(job)
        for i in todo:
            self._submit((index, i), self.fetch_chunk, job, job.chunks[i])

    def _usable_offline(self, job: Job) -> bool:
        """The hub cannot be reached, but a file is in place (e.g. from a version of this script
        that kept no markers): use it if it has the minimum size rather than fail the boot. No
        marker is written, so the next start with the hub reachable checks its digest."""
        try:
            size = job.dest.stat().st_size
        except OSError:
            return False
        if size < job.entry.min_mb * MIB:
            return False
        self.err(f"{job.rel}: the hub cannot be reached; using the file in place (size only)")
        assert self.progress is not None
        self.progress.skipped()
        return True

    def _existing_is_good(self, job: Job) -> bool:
        """A file under the final name without a valid marker (e.g. from the old downloader)."""
        if not job.dest.exists():
            return False
        have = job.dest.stat().st_size
        if have < job.size:
            self.log(f"incomplete {job.rel} ({have} of {job.size} bytes): resuming")
            os.replace(job.dest, job.part)
            job.state.unlink(missing_ok=True)
            return False
        if have == job.size and job.digest is not None:
            got = file_digest(job.dest, job.digest.algo)
            if got == job.digest.value:
                self.markers.record(job.rel, job.dest, job.digest)
                self.log(f"present  {job.rel} (verified)")
                assert self.progress is not None
                self.progress.skipped()
                return True
        self.err(f"{job.rel} on the volume is not the published file: downloading it again")
        job.dest.unlink()
        self.markers.forget(job.rel)
        return False

    # -- transfer ----------------------------------------------------------------------------

    def fetch_chunk(self, job: Job, chunk: Chunk) -> None:
        failures, last = 0, ""
        while failures < self.s.attempts and job.failed is None:
            before = chunk.done
            try:
                self._transfer(job, chunk)
            except FileFailed as exc:
                self._fail(job, str(exc))
                return
            except (HttpError, OSError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if chunk.done >= chunk.length:
                break
            if chunk.done > before:
                continue  # a cut after progress: continue at once; only stalls count
            failures += 1
            if failures < self.s.attempts:
                time.sleep(self.s.retry_delay(failures))
        if job.failed is not None:
            return
        if chunk.done < chunk.length:
            self._fail(
                job,
                f"download failed: {job.rel} (bytes {chunk.start + chunk.done}-{chunk.end - 1}: "
                f"{last or 'connection ended early'}; {self.s.attempts} attempts without progress)",
            )
            return
        with job.lock:
            job.pending -= 1
            last_one = job.pending == 0
            with contextlib.suppress(OSError):
                job.save_state()
        if last_one:
            self.finish(job)

    def _transfer(self, job: Job, chunk: Chunk) -> None:
        assert self.progress is not None
        if not job.ranges and chunk.done:
            self.progress.rewind(job.rel, chunk.done)  # no Range support: start over
            chunk.done = 0
        offset = chunk.start + chunk.done
        headers = dict(job.headers)
        if job.ranges:
            headers["Range"] = f"bytes={offset}-{chunk.end - 1}"
        resp = self._call("GET", job.url, headers)
        try:
            if resp.status in FATAL_STATUSES:
                raise FileFailed(self._status_message(job, resp.status, job.url))
            if job.ranges and resp.status == 206:
                got = resp.headers.get("Content-Range", "")
                if not got.startswith(f"bytes {offset}-"):
                    raise ValueError(f"asked for bytes {offset}-, got Content-Range {got!r}")
            elif resp.status != 200 or (job.ranges and job.size and offset != 0):
                raise HttpError(resp.status, job.url)
            while chunk.done < chunk.length:
                data = resp.read(min(READ_SIZE, chunk.length - chunk.done))
                if not data:
                    return  # cut: the caller retries the rest of the range
                os.pwrite(job.fd, data, chunk.start + chunk.done)
                chunk.done += len(data)
                self.progress.advance(job.rel, len(data))
        finally:
            resp.close()

    def finish(self, job: Job) -> None:
        """Every byte is in the part file: check it and give it its final name."""
        assert self.progress is not None
        with job.state_lock:
            job.closed = True
        try:
            os.fsync(job.fd)
            os.close(job.fd)
            job.fd = -1
            size = job.part.stat().st_size
            if size != job.size:
                raise FileFailed(
                    f"verification failed: {job.rel}: {size} bytes, expected {job.size}"
                )
            if job.digest is None:
                self.log(f"no digest known for {job.rel}: checked by size only")
            else:
                got = file_digest(job.part, job.digest.algo)
                if got != job.digest.value:
                    job.part.unlink(missing_ok=True)
                    job.state.unlink(missing_ok=True)
                    raise FileFailed(
                        f"verification failed: {job.rel}: {job.digest.algo} mismatch: got {got}, "
                        f"expected {job.digest.value} (from the {job.digest.origin}); "
                        "partial file deleted"
                    )
            os.replace(job.part, job.dest)
            job.state.unlink(missing_ok=True)
            self.markers.record(job.rel, job.dest, job.digest)
        except FileFailed as exc:
            self._fail(job, str(exc))
            return
        except OSError as exc:
            self._fail(job, f"download failed: {job.rel} ({exc})")
            return
        self.progress.finish(job.rel, ok=True)
        self.log(f"ok       {job.rel}")

    def _fail(self, job: Job, message: str) -> None:
        with job.lock:
            if job.failed is not None:
                return
            job.failed = message
        if job.fd >= 0:
            with contextlib.suppress(OSError):
                job.save_state()
        self.err(message)
        assert self.progress is not None
        self.progress.finish(job.rel, ok=False)

    # -- scheduling --------------------------------------------------------------------------

    def _submit(self, priority: tuple[int, int], fn: Callable[..., None], *args: Any) -> None:
        with self._count_lock:
            self._outstanding += 1
            self._seq += 1
            seq = self._seq
        self._tasks.put((priority, seq, (fn, args)))

    def _worker(self) -> None:
        while True:
            _, _, item = self._tasks.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception as exc:  # a bug must not hang the queue; name the file
                job = args[0]
                self._fail(job, f"download failed: {job.rel} ({type(exc).__name__}: {exc})")
            finally:
                with self._count_lock:
                    self._outstanding -= 1
                    idle = self._outstanding == 0
                if idle:
                    for _ in range(self.s.streams):
                        self._tasks.put(((1 << 62, 0), 0, None))

    def save_all(self) -> None:
        """Record every part's progress now (pod stop): the next start resumes from here."""
        for job in self.jobs:
            if job.fd >= 0 and job.failed is None and job.chunks:
                with contextlib.suppress(OSError):
                    job.save_state()

    # -- the whole run -----------------------------------------------------------------------

    def present(self, entry: Entry) -> bool:
        """True when the file is in place and verified, without a request."""
        dest = self.s.models_dir / entry.relpath
        if not dest.exists():
            return False
        if self.markers.matches(entry.relpath, dest):
            return True
        recorded = self.markers.recorded_digest(entry.relpath)
        pinned = Digest("sha256", entry.sha256, "manifest") if entry.sha256 else None
        want = pinned or (recorded if recorded and recorded.value else None)
        if want is None:
            return False  # nothing to check it against offline: the hub's digest decides
        self.log(f"checking {entry.relpath} (changed since it was verified, or never verified)")
        got = file_digest(dest, want.algo)
        if got == want.value:
            self.markers.record(entry.relpath, dest, want)
            return True
        self.err(
            f"{entry.relpath}: {want.algo} mismatch: got {got}, expected {want.value} "
            f"(from the {want.origin}); downloading it again"
        )
        dest.unlink()
        self.markers.forget(entry.relpath)
        return False

    def run(self, entries: list[Entry]) -> list[str]:
        """Downloads what is missing; returns the paths of the files that failed."""
        self.progress = Progress(self.log, len(entries), self.s.status_file)
        for entry in entries:
            if self.present(entry):
                self.log(f"present  {entry.relpath}")
                self.progress.skipped()
                continue
            url = entry.url(self.s.env)
            dest = self.s.models_dir / entry.relpath
            self.jobs.append(Job(entry, dest, url, self.auth_headers(entry)))
        if not self.jobs:
            self.progress.report("verified", lines=False)
            return []
        for index, job in enumerate(self.jobs):
            job.dest.parent.mkdir(parents=True, exist_ok=True)
            self._submit((-1, index), self.prepare, job)  # sizes first: totals early
        stop = threading.Event()
        # Every tick: a progress line, and each part's record brought up to date.
        self.progress.run_every(self.s.progress_interval, stop, also=self.save_all)
        workers = [
            threading.Thread(target=self._worker, name=f"models-{i}", daemon=True)
            for i in range(self.s.streams)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        stop.set()
        failed = [job.rel for job in self.jobs if job.failed is not None]
        self.progress.report("failed" if failed else "verified")
        return failed
