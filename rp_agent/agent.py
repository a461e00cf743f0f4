"""The sync loop: watcher -> durable queue -> bounded pool of upload workers.

One dispatcher (the calling thread) claims due rows from the queue whenever a worker slot is
free. Workers hash, skip content the bucket already holds, upload, and record the outcome.
Stopping (SIGTERM/SIGINT) stops the watcher and the claiming, then waits up to the grace
period for uploads in flight; unfinished rows stay in the queue for the next start.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent import bootstatus, clock
from rp_agent.config import AgentConfig
from rp_agent.heartbeat import Heartbeat
from rp_agent.keys import object_key
from rp_agent.paths import key_safe
from rp_agent.podlogs import LogShipper
from rp_agent.queue import Job, UploadQueue
from rp_agent.r2 import make_r2_client
from rp_agent.receipts import ReceiptWriter
from rp_agent.supervise import restart_note
from rp_agent.uploader import ObjectMeta, Uploader, error_code, is_permanent, read_and_hash
from rp_agent.watcher import Watcher

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# A one-shot sync (`rp-agent sync --once`) says how far it is this often.
ONCE_PROGRESS_EVERY_S = 5.0

EXIT_OK = 0
EXIT_FAILED = 1  # --once finished but some files failed
EXIT_GRACE_EXPIRED = 3  # stopped with uploads still in flight (they stay queued)


class AgentStartError(RuntimeError):
    """The agent cannot start (bucket missing, credentials refused, endpoint down)."""


def backoff_delay(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(base / 2, min(cap, base * 2**attempt))


class SyncAgent:
    def __init__(self, config: AgentConfig, client: S3Client | None = None) -> None:
        self.config = config
        self.client = client or make_r2_client(config.r2, max_pool_connections=config.workers * 5)
        self.queue = UploadQueue(config.db_path)
        self.uploader = Uploader(
            self.client,
            config.r2.bucket,
            multipart_threshold=config.multipart_threshold,
            part_size=config.part_size,
            part_concurrency=config.part_concurrency,
        )
        self.watcher = Watcher(
            str(config.watch_dir),
            config.extensions,
            self._enqueue,
            self.queue.known,
            settle_seconds=config.settle_seconds,
            rescan_interval=config.rescan_interval,
        )
        self._wake = threading.Event()
        self._in_flight: set[str] = set()
        self._in_flight_lock = threading.Lock()
        self._idle = threading.Condition(self._in_flight_lock)
        self._reported_codes: set[str] = set()
        self.uploads_this_run = 0
        self.receipts = ReceiptWriter(
            self.client, config.r2.bucket, self.queue, config.pod_name, config.prefix, self._busy
        )
        self.logs = LogShipper(
            self.client,
            config.r2.bucket,
            self.queue,
            config.pod_name,
            config.prefix,
            list(config.log_files),
        )
        self.heartbeat = Heartbeat(self.client, config.r2.bucket, config.pod_name, config.prefix)
        status_file = bootstatus.status_path()
        self.boot = (
            bootstatus.BootPublisher(
                self.client, config.r2.bucket, config.pod_name, config.prefix, status_file
            )
            if status_file is not None
            else None
        )

    # -- start checks ------------------------------------------------------------------------

    def check_bucket(self) -> None:
        """HeadBucket once, so a wrong bucket or key fails at start with one clear line."""
        bucket = self.config.r2.bucket
        try:
            self.client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = error_code(exc)
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise AgentStartError(
                    f"bucket {bucket!r} does not exist at {self.config.r2.endpoint}"
                ) from None
            if code in {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                raise AgentStartError(
                    f"access to bucket {bucket!r} denied: check R2_ACCESS_KEY_ID / R2_SECRET_ACCESS_KEY"
                ) from None
            raise AgentStartError(f"cannot reach bucket {bucket!r}: {code}") from None
        except BotoCoreError as exc:
            raise AgentStartError(
                f"cannot reach R2 endpoint {self.config.r2.endpoint}: {exc}"
            ) from None

    def check_bucket_on_a_pod(self) -> None:
        """On a pod, what R2 answers at start never stops the agent: the outputs are queued on
        disk and uploaded once R2 takes them (a 500 or an outage at boot is often gone a minute
        later, and an agent that exits uploads nothing). The answer is reported, once."""
        try:
            self.check_bucket()
        except AgentStartError as exc:
            log.error("%s; queueing outputs and retrying uploads until R2 takes them", exc)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, once: bool = False) -> int:
        if once:
            self.check_bucket()  # a one-shot sync by hand: a wrong setting fails at once
        else:
            self.check_bucket_on_a_pod()
        recovered = self.queue.recover(retry_failed=True)
        if recovered:
            log.info("retrying %d file(s) left unfinished by the previous run", recovered)
        log.info(
            "syncing %s to %s/%s (%d workers)",
            self.config.watch_dir,
            self.config.r2.bucket,
            self.config.prefix,
            self.config.workers,
        )
        self.receipts.start()
        self.logs.start()
        if not once:  # a watching agent says it is alive; a one-shot sync by hand need not
            self.heartbeat.start()
        if self.boot is not None:
            self.boot.start()
        note = restart_note()
        if note:
            log.warning(note)  # shipped to the pod's log in R2: the run sees the agent died
        try:
            return self._run_once(stop) if once else self._watch(stop)
        finally:
            # After the uploads: every finished one gets its receipt before the agent exits.
            self.receipts.stop()
            self.logs.stop()
            self.heartbeat.stop()
            if self.boot is not None:
                self.boot.stop()

    def _watch(self, stop: threading.Event) -> int:
        self.watcher.start()
        log.info("watching %s for new files", self.config.watch_dir)
        next_failed_retry = time.monotonic() + self.config.failed_retry_interval
        try:
            while not stop.is_set():
                if time.monotonic() >= next_failed_retry:
                    self._retry_failed()
                    next_failed_retry = time.monotonic() + self.config.failed_retry_interval
                self._dispatch()
                self._wake.wait(timeout=self._wait_time())
                self._wake.clear()
        finally:
            self.watcher.stop()
        return self._drain()

    def _retry_failed(self) -> None:
        """A long-running agent never gives a file up for good: rows that failed (R2 refusing
        for a while, a file unreadable for a moment) are queued again now and then."""
        retried = self.queue.requeue_failed()
        if retried:
            log.info("retrying %d file(s) that failed earlier", retried)
            self._wake.set()

    def _run_once(self, stop: threading.Event) -> int:
        self.watcher.rescan()
        said_at = time.monotonic()
        while not stop.is_set():
            self.watcher.poll()
            self._dispatch()
            if self.watcher.settling() == 0 and self.queue.outstanding() == 0 and not self._busy():
                break
            if time.monotonic() - said_at >= ONCE_PROGRESS_EVERY_S:
                said_at = time.monotonic()
                self._say_progress()
            self._wake.wait(timeout=self._wait_time())
            self._wake.clear()
        if stop.is_set():
            return self._drain()
        counts = self.queue.counts()
        log.info(
            "finished: %d file(s) synced (%d uploaded by this run), %d failed",
            counts["done"],
            self.uploads_this_run,
            counts["failed"],
        )
        if self.watcher.intake_errors:
            log.error("%d file(s) could not be queued (see above)", self.watcher.intake_errors)
        return EXIT_FAILED if counts["failed"] or self.watcher.intake_errors else EXIT_OK

    def _say_progress(self) -> None:
        """A line while a one-shot sync runs: how far it is (a long sync is not a hang)."""
        counts = self.queue.counts()
        total = sum(counts.values())
        log.info(
            "progress: %d of %d queued file(s) done, %d uploading, %d waiting, %d failed; "
            "%d more still being written",
            counts["done"], total, counts["uploading"], counts["pending"], counts["failed"],
            self.watcher.settling(),
        )  # fmt: skip

    def _wait_time(self) -> float:
        due = self.queue.next_due()
        if due is None:
            return 0.2
        return max(0.01, min(0.2, due - clock.wall()))

    def _busy(self) -> bool:
        with self._in_flight_lock:
            return bool(self._in_flight)

    def _dispatch(self) -> None:
        """Start one upload per free worker slot (at most `workers` run at once).

        Each upload runs on its own daemon thread rather than in a ThreadPoolExecutor so that,
        when the grace period runs out, the process can exit without joining stuck uploads;
        their rows are simply still `uploading` and retried at the next start.
        """
        with self._in_flight_lock:
            free = self.config.workers - len(self._in_flight)
            exclude = set(self._in_flight)
        for job in self.queue.claim(free, exclude):
            with self._in_flight_lock:
                self._in_flight.add(job.path)
            threading.Thread(target=self._work, args=(job,), name="upload", daemon=True).start()

    def _drain(self) -> int:
        """Wait up to the grace period for uploads in flight; pending rows stay queued."""
        deadline = time.monotonic() + self.config.grace
        with self._idle:
            while self._in_flight and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            left = len(self._in_flight)
        counts = self.queue.counts()
        if left:
            log.warning(
                "grace period over with %d upload(s) in flight; they stay queued for the next start",
                left,
            )
            return EXIT_GRACE_EXPIRED
        log.info(
            "stopped: %d pending, %d done, %d failed (queue kept in %s)",
            counts["pending"],
            counts["done"],
            counts["failed"],
            self.config.db_path,
        )
        return EXIT_OK

    # -- intake ------------------------------------------------------------------------------

    def _enqueue(
        self, rel: str, size: int, mtime: float, close_time: float, live: bool = False
    ) -> None:
        close_time = clock.from_kernel(close_time)  # the watcher's times are the kernel's
        display = key_safe(rel)
        key = object_key(display, mtime, self.config.pod_id, self.config.prefix)
        if self.queue.observe(rel, display, key, size, mtime, close_time, check_remote=not live):
            log.debug("queued %s (%d bytes)", display, size)
            self._wake.set()

    # -- one upload --------------------------------------------------------------------------

    def _work(self, job: Job) -> None:
        try:
            self._upload(job)
        except Exception as exc:  # never let a worker die silently
            log.exception("unexpected error uploading %s", job.display)
            self.queue.mark_failed(job, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._idle:
                self._in_flight.discard(job.path)
                self._idle.notify_all()
            self._wake.set()
            self.receipts.notify()

    def _upload(self, job: Job) -> None:
        path = os.path.join(self.config.watch_dir, job.path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.queue.mark_failed(job, "file disappeared before it could be uploaded")
            log.warning("%s disappeared before upload", job.display)
            return
        if (st.st_size, st.st_mtime) != (job.size, job.mtime):
            # Rewritten since it was queued: queue the new version instead.
            self._enqueue(job.path, st.st_size, st.st_mtime, time.time(), live=True)
            self.queue.release(job)
            return
        try:
            sha, body = read_and_hash(path, job.size, self.config.in_memory_limit)
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            self.queue.mark_failed(job, reason)
            log.error("%s: %s", job.display, reason)
            return
        try:
            if body is not None and len(body) != job.size:
                raise OSError("file changed while it was read")  # retried with the new version
            uploaded, parts, started = self._put_unless_present(job, path, sha, body)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._record_error(job, exc)
            return
        if not self.queue.mark_done(job, sha, started, uploaded):
            return  # a newer version was queued meanwhile; it will be uploaded next
        if uploaded:
            with self._in_flight_lock:
                self.uploads_this_run += 1
            log.info(
                "uploaded %s -> %s (%d bytes, %d part(s))", job.display, job.key, job.size, parts
            )
        else:
            log.info("%s already in the bucket with the same sha256; skipped", job.display)
        self._requeue_if_changed(job, path)

    def _put_unless_present(
        self, job: Job, path: str, sha: str, body: bytes | None
    ) -> tuple[bool, int, float | None]:
        if self.queue.object_sha256(job.key) == sha:
            return False, 0, None
        if job.check_remote and self.uploader.remote_sha256(job.key) == sha:
            return False, 0, None
        started = clock.wall()
        meta = ObjectMeta(sha256=sha, close_time=job.close_time, upload_start=started)
        parts = self.uploader.upload(path, job.key, job.size, meta, body)
        return True, parts, started

    def _requeue_if_changed(self, job: Job, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        if (st.st_size, st.st_mtime) != (job.size, job.mtime):
            self._enqueue(job.path, st.st_size, st.st_mtime, time.time(), live=True)

    def _record_error(self, job: Job, exc: BaseException) -> None:
        code = error_code(exc)
        reason = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
        if is_permanent(exc):
            self.queue.mark_failed(job, reason)
            level = logging.ERROR if code not in self._reported_codes else logging.DEBUG
            self._reported_codes.add(code or "")
            log.log(
                level,
                "upload to bucket %r refused (%s); marked failed: %s",
                self.config.r2.bucket,
                code,
                job.display,
            )
            return
        if job.attempts + 1 >= self.config.max_attempts:
            self.queue.mark_failed(job, reason)
            log.error(
                "giving up on %s after %d attempts: %s", job.display, job.attempts + 1, reason
            )
            return
        delay = backoff_delay(job.attempts)
        self.queue.mark_retry(job, reason, delay)
        log.warning("upload of %s failed (%s); retry in %.1fs", job.display, reason, delay)
