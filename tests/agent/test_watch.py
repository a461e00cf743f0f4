"""Watch mode: the real agent process and the real watchdog observer on real files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from rp_agent.r2 import R2Settings

from .helpers import list_objects, prefix_of, sha256_of, wait_for


def object_body(client, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        return None


def test_new_subdirectories_moved_in_and_preexisting_files(
    make_agent, tmp_path: Path, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    (watch_dir / "before.png").write_bytes(b"present before start")
    run = make_agent().start()
    expected = {"before.png": b"present before start"}

    # ComfyUI's SaveVideo writes into a subfolder that may not exist yet.
    deep = watch_dir / "video" / "day1" / "batch"
    deep.mkdir(parents=True)
    (deep / "clip_00001_.mp4").write_bytes(b"in new subdir")
    expected["video/day1/batch/clip_00001_.mp4"] = b"in new subdir"

    # A finished file renamed in from outside the watch dir gives no close event.
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "moved.webp").write_bytes(b"moved in")
    os.rename(outside / "moved.webp", watch_dir / "moved.webp")
    expected["moved.webp"] = b"moved in"

    # A whole directory moved in: its files produce no events of their own.
    (outside / "album").mkdir()
    (outside / "album" / "one.jpg").write_bytes(b"dir moved in")
    os.rename(outside / "album", watch_dir / "album")
    expected["album/one.jpg"] = b"dir moved in"

    # Written to a temp name then renamed into place (the atomic-writer pattern).
    (watch_dir / "atomic.mp3.part").write_bytes(b"renamed into place")
    os.rename(watch_dir / "atomic.mp3.part", watch_dir / "atomic.mp3")
    expected["atomic.mp3"] = b"renamed into place"

    keys = {prefix_of(rel): data for rel, data in expected.items()}
    wait_for(lambda: set(keys) <= set(list_objects(r2_client, r2_settings.bucket)), 30)
    for key, data in keys.items():
        obj = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)
        assert obj["Body"].read() == data
        assert obj["Metadata"]["sha256"] == sha256_of(data)
    assert not any(k.endswith(".part") for k in list_objects(r2_client, r2_settings.bucket))
    assert run.process is not None and run.process.poll() is None


def test_slow_writer_is_uploaded_once_with_final_content(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent().start()
    path = watch_dir / "video" / "slow_00001_.mp4"
    path.parent.mkdir()
    digest = hashlib.sha256()
    with open(path, "wb") as fh:  # one open handle appending for ~2 s, like an encoder
        for _ in range(20):
            chunk = os.urandom(64 * 1024)
            fh.write(chunk)
            fh.flush()
            digest.update(chunk)
            time.sleep(0.1)
    key = prefix_of("video/slow_00001_.mp4")
    wait_for(lambda: object_body(r2_client, r2_settings.bucket, key), 30)
    time.sleep(1.5)  # anything that would upload a second time would have done so by now
    obj = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest.hexdigest()
    assert obj["Metadata"]["sha256"] == digest.hexdigest()
    assert run.log().count("uploaded video/slow_00001_.mp4") == 1, run.log()


def test_zero_byte_file_that_stays_empty_is_uploaded_and_growing_file_is_not_truncated(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent().start()
    (watch_dir / "empty.flac").write_bytes(b"")
    # Created empty and closed, then filled shortly after: the empty version must not win.
    grows = watch_dir / "grows.png"
    grows.write_bytes(b"")
    time.sleep(0.3)
    grows.write_bytes(b"real image")

    wait_for(
        lambda: object_body(r2_client, r2_settings.bucket, prefix_of("grows.png")) == b"real image",
        30,
    )
    wait_for(lambda: prefix_of("empty.flac") in list_objects(r2_client, r2_settings.bucket), 30)
    assert list_objects(r2_client, r2_settings.bucket)[prefix_of("empty.flac")]["Size"] == 0
    assert "uploaded grows.png -> " in run.log()
    assert "uploaded grows.png" in run.log() and "grows.png (0 bytes" not in run.log()


def test_rewritten_file_is_uploaded_again(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    make_agent().start()
    path = watch_dir / "image.png"
    path.write_bytes(b"version one")
    key = prefix_of("image.png")
    wait_for(lambda: object_body(r2_client, r2_settings.bucket, key) == b"version one", 30)
    path.write_bytes(b"version two!")
    wait_for(lambda: object_body(r2_client, r2_settings.bucket, key) == b"version two!", 30)
    meta = r2_client.head_object(Bucket=r2_settings.bucket, Key=key)["Metadata"]
    assert meta["sha256"] == sha256_of(b"version two!")


def delete_bucket(client, bucket: str) -> None:
    """Empty the bucket and delete it; the running agent's heartbeat may land in between, so
    try again until the bucket is gone."""
    for _ in range(20):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):  # outputs and the agent's own objects
                client.delete_object(Bucket=bucket, Key=obj["Key"])
        try:
            client.delete_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "BucketNotEmpty":
                raise
    raise AssertionError(f"bucket {bucket} could not be emptied and deleted")


def test_deleted_bucket_marks_files_failed_and_status_shows_it(
    make_agent, watch_dir: Path, tmp_path: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent().start()
    delete_bucket(r2_client, r2_settings.bucket)
    for i in range(3):
        (watch_dir / f"lost_{i}.png").write_bytes(b"x")

    def failed_count() -> int:
        out = subprocess.run(
            [sys.executable, "-m", "rp_agent.cli", "status", "--state-dir", str(run.state_dir)],
            capture_output=True,
            text=True,
            env=run.env,
        )
        assert out.returncode == 0, out.stderr
        return 3 if "failed: 3" in out.stdout and "NoSuchBucket" in out.stdout else 0

    wait_for(failed_count, 30)
    # One clear line for the whole outage, not one per file.
    assert run.log().count("refused (NoSuchBucket)") == 1, run.log()
    assert run.process is not None and run.process.poll() is None  # still running


@pytest.mark.slow
def test_sigterm_finishes_in_flight_and_keeps_pending_rows(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent("--workers", "1", "--grace", "20").start()
    names = [f"burst_{i:03d}.png" for i in range(40)]
    for name in names:
        (watch_dir / name).write_bytes(os.urandom(512 * 1024))
    wait_for(lambda: "uploaded burst_" in run.log(), 30)
    run.signal(signal.SIGTERM)
    assert run.wait(60) == 0, run.log()
    uploaded = list_objects(r2_client, r2_settings.bucket)
    assert "stopped:" in run.log()
    from rp_agent.queue import UploadQueue

    queue = UploadQueue(run.state_dir / "queue.sqlite3")
    counts = queue.counts()
    queue.close()
    assert counts["uploading"] == 0  # the in-flight upload finished within the grace period
    assert counts["done"] == len(uploaded)
    # Queued-but-not-uploaded rows stay pending; files still settling when the signal came
    # are not in the queue yet and are found by the next start's rescan.
    assert counts["pending"] > 0, counts
    assert counts["done"] + counts["pending"] <= len(names)

    # The pending rows survive: a --once restart uploads exactly the rest.
    again = make_agent().start(once=True)
    assert again.wait() == 0, again.log()
    assert set(list_objects(r2_client, r2_settings.bucket)) == {prefix_of(n) for n in names}


@pytest.mark.slow
def test_kill_9_mid_burst_then_restart_loses_nothing(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent("--workers", "2").start()
    contents: dict[str, bytes] = {}
    stop_writing = threading.Event()

    def writer() -> None:
        for i in range(120):
            if stop_writing.is_set():
                return
            data = os.urandom(256 * 1024)
            rel = f"video/b{i // 40}/clip_{i:04d}.mp4"
            (watch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (watch_dir / rel).write_bytes(data)
            contents[rel] = data

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: run.log().count("uploaded video/") >= 10, 60, interval=0.02)
    assert run.process is not None
    run.process.kill()  # SIGKILL mid-burst: no cleanup at all
    run.process.wait()
    thread.join()
    before = list_objects(r2_client, r2_settings.bucket)
    assert len(before) < len(contents), "the kill should have landed mid-burst"

    again = make_agent("--workers", "2").start(once=True)
    assert again.wait() == 0, again.log()
    after = list_objects(r2_client, r2_settings.bucket)
    assert set(after) == {prefix_of(rel) for rel in contents}
    for rel, data in contents.items():
        obj = r2_client.get_object(Bucket=r2_settings.bucket, Key=prefix_of(rel))
        assert obj["Body"].read() == data
        assert obj["Metadata"]["sha256"] == sha256_of(data)
    # Objects finished before the kill were not uploaded again.
    for key, obj in before.items():
        assert after[key]["ETag"] == obj["ETag"]
        assert after[key]["LastModified"] == obj["LastModified"]

    # And a second restart uploads nothing at all.
    third = make_agent().start(once=True)
    assert third.wait() == 0
    assert "uploaded video/" not in third.log()
    assert "(0 uploaded by this run)" in third.log()
    assert list_objects(r2_client, r2_settings.bucket) == after


@pytest.mark.slow
def test_64_mib_multipart_upload_has_equal_parts_and_matching_sha256(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    data = os.urandom(64 * 1024 * 1024 + 12345)
    (watch_dir / "big.mp4").write_bytes(data)
    run = make_agent().start(once=True)
    assert run.wait(180) == 0, run.log()
    key = prefix_of("big.mp4")
    head = r2_client.head_object(Bucket=r2_settings.bucket, Key=key, PartNumber=1)
    parts = head["PartsCount"]
    assert parts > 1
    sizes = [
        r2_client.head_object(Bucket=r2_settings.bucket, Key=key, PartNumber=n)["ContentLength"]
        for n in range(1, parts + 1)
    ]
    assert sum(sizes) == len(data)
    assert len(set(sizes[:-1])) == 1 and sizes[-1] <= sizes[0]
    assert sizes[0] >= 5 * 1024 * 1024
    body = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)
    assert hashlib.sha256(body["Body"].read()).hexdigest() == sha256_of(data)
    assert body["Metadata"]["sha256"] == sha256_of(data)


def test_files_written_into_brand_new_directories_do_not_wait_for_a_rescan(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    """A file written the instant its directory appears can beat watchdog's new inotify watch.

    With the periodic rescan an hour away, only the agent's own look into new directories can
    find such files; the deadline is far below the rescan interval.
    """
    make_agent("--rescan-interval", "3600").start()
    expected = {}
    for i in range(30):
        deep = watch_dir / f"video{i}" / "a" / "b"
        deep.mkdir(parents=True)
        data = f"clip {i}".encode()
        (deep / f"clip_{i:05d}_.mp4").write_bytes(data)
        expected[prefix_of(f"video{i}/a/b/clip_{i:05d}_.mp4")] = data
    wait_for(lambda: set(expected) <= set(list_objects(r2_client, r2_settings.bucket)), 20)
    for key, data in expected.items():
        assert object_body(r2_client, r2_settings.bucket, key) == data
