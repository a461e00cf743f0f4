"""`rp-agent sync --once` and `status` as real processes against the real S3 server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rp_agent.agent import SyncAgent
from rp_agent.config import AgentConfig
from rp_agent.r2 import R2Settings

from .helpers import agent_env, list_objects, prefix_of, sha256_of


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rp_agent.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_once_uploads_existing_files_with_contract_metadata(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    files = {
        "a.png": os.urandom(1000),
        "video/clip_00001_.mp4": os.urandom(300_000),
        "audio/deep/x.wav": b"RIFF" + os.urandom(10),
    }
    for rel, data in files.items():
        (watch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (watch_dir / rel).write_bytes(data)
    for ignored in (".hidden.png", "x.png.tmp", "clip.mp4.part", ".cache/a.png", "notes.txt"):
        (watch_dir / ignored).parent.mkdir(parents=True, exist_ok=True)
        (watch_dir / ignored).write_bytes(b"ignored")

    run = make_agent().start(once=True)
    assert run.wait() == 0, run.log()

    objects = list_objects(r2_client, r2_settings.bucket)
    assert set(objects) == {prefix_of(rel) for rel in files}
    for rel, data in files.items():
        key = prefix_of(rel)
        body = r2_client.get_object(Bucket=r2_settings.bucket, Key=key)
        assert body["Body"].read() == data
        meta = body["Metadata"]
        assert meta["sha256"] == sha256_of(data)
        assert float(meta["close-time"]) > 0 and float(meta["upload-start"]) > 0
        assert set(meta) == {"sha256", "close-time", "upload-start"}


def test_restart_skips_same_content_and_reuploads_rewritten_file(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    (watch_dir / "same.png").write_bytes(b"same content")
    (watch_dir / "changed.png").write_bytes(b"first content")
    assert make_agent().start(once=True).wait() == 0
    before = list_objects(r2_client, r2_settings.bucket)

    (watch_dir / "changed.png").write_bytes(b"second content, longer")
    second = make_agent().start(once=True)
    assert second.wait() == 0, second.log()
    after = list_objects(r2_client, r2_settings.bucket)

    same, changed = prefix_of("same.png"), prefix_of("changed.png")
    assert after[same]["ETag"] == before[same]["ETag"]
    assert after[same]["LastModified"] == before[same]["LastModified"]
    assert "uploaded same.png" not in second.log()
    body = r2_client.get_object(Bucket=r2_settings.bucket, Key=changed)
    assert body["Body"].read() == b"second content, longer"
    assert body["Metadata"]["sha256"] == sha256_of(b"second content, longer")


def test_fresh_state_trusts_bucket_sha256_instead_of_reuploading(
    make_agent, tmp_path: Path, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    (watch_dir / "a.png").write_bytes(b"content")
    assert make_agent().start(once=True).wait() == 0
    etag = list_objects(r2_client, r2_settings.bucket)[prefix_of("a.png")]["ETag"]

    # A new pod with no queue (state lost) must not upload the same content again.
    run = make_agent("--state-dir", str(tmp_path / "other-state")).start(once=True)
    assert run.wait() == 0
    assert "already in the bucket" in run.log()
    assert list_objects(r2_client, r2_settings.bucket)[prefix_of("a.png")]["ETag"] == etag


def test_zero_byte_unicode_and_non_utf8_names(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    (watch_dir / "empty.wav").write_bytes(b"")
    (watch_dir / "vidéo 日本.mp4").write_bytes(b"unicode")
    raw_name = os.path.join(os.fsencode(watch_dir), b"bad\xff\xfename.png")
    with open(raw_name, "wb") as fh:
        fh.write(b"bytes name")

    run = make_agent().start(once=True)
    assert run.wait() == 0, run.log()
    objects = list_objects(r2_client, r2_settings.bucket)
    assert prefix_of("empty.wav") in objects and objects[prefix_of("empty.wav")]["Size"] == 0
    unicode_obj = r2_client.get_object(Bucket=r2_settings.bucket, Key=prefix_of("vidéo 日本.mp4"))
    assert unicode_obj["Body"].read() == b"unicode"
    bad = r2_client.get_object(Bucket=r2_settings.bucket, Key=prefix_of("bad%FF%FEname.png"))
    assert bad["Body"].read() == b"bytes name"
    for meta in (unicode_obj["Metadata"], bad["Metadata"]):
        assert all(v.isascii() for v in meta.values())


def test_missing_bucket_fails_at_start_with_one_line(
    local_s3, watch_dir: Path, tmp_path: Path
) -> None:
    env = agent_env(local_s3.settings("no-such-bucket-here"))
    result = run_cli(
        "sync",
        "--watch-dir",
        str(watch_dir),
        "--once",
        "--state-dir",
        str(tmp_path / "st"),
        env=env,
    )
    assert result.returncode != 0
    assert "no-such-bucket-here" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [("missing-env", "R2_SECRET_ACCESS_KEY"), ("missing-dir", "does not exist")],
)
def test_bad_input_is_one_clear_line(
    case: str, message: str, r2_settings: R2Settings, tmp_path: Path
) -> None:
    env = agent_env(r2_settings)
    watch = tmp_path / "out"
    watch.mkdir()
    if case == "missing-env":
        del env["R2_SECRET_ACCESS_KEY"]
    else:
        watch = tmp_path / "missing"
    result = run_cli("sync", "--watch-dir", str(watch), "--once", env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert r2_settings.secret_access_key not in result.stderr


def test_file_vanishing_before_upload_is_marked_failed_not_crash(
    r2_env: dict[str, str], watch_dir: Path, tmp_path: Path
) -> None:
    # Simulates an unreadable/vanished file between enqueue and upload (tests run as root,
    # where chmod 000 does not stop reads).
    config = AgentConfig.build(str(watch_dir), state_dir=str(tmp_path / "st"))
    (watch_dir / "kept.png").write_bytes(b"kept")
    agent = SyncAgent(config)
    agent.queue.observe("gone.png", "gone.png", "outputs/x/gone.png", 4, 1.0, 1.0)
    assert agent.run(threading.Event(), once=True) == 1
    assert agent.queue.counts()["done"] == 1
    [row] = agent.queue.rows("failed")
    assert row.display == "gone.png" and "disappeared" in (row.last_error or "")

    status = run_cli("status", "--state-dir", str(tmp_path / "st"), "--json", env=dict(os.environ))
    assert status.returncode == 0
    data = json.loads(status.stdout)
    assert data["counts"]["failed"] == 1 and data["counts"]["done"] == 1
    assert data["last_errors"][0]["path"] == "gone.png"


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root reads chmod 000 files; covered by the vanish test"
)
def test_unreadable_file_is_marked_failed(make_agent, watch_dir: Path) -> None:
    path = watch_dir / "locked.png"
    path.write_bytes(b"secret")
    path.chmod(0)
    try:
        run = make_agent().start(once=True)
        assert run.wait() == 1
        assert "cannot read file" in run.log()
    finally:
        path.chmod(0o644)


def test_status_without_a_queue_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("status", "--state-dir", str(tmp_path / "never-used"), env=dict(os.environ))
    assert result.returncode == 2
    assert "no queue in" in result.stderr and "Traceback" not in result.stderr


def test_status_human_output_lists_counts(make_agent, watch_dir: Path) -> None:
    (watch_dir / "a.png").write_bytes(b"a")
    run = make_agent().start(once=True)
    assert run.wait() == 0
    result = run_cli("status", "--state-dir", str(run.state_dir), env=dict(os.environ))
    assert result.returncode == 0
    assert (
        "pending: 0" in result.stdout
        and "done: 1" in result.stdout
        and "failed: 0" in result.stdout
    )


def test_a_one_shot_sync_says_how_far_it_is(
    r2_env: dict[str, str],
    watch_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`sync --once` over many files prints progress lines while it runs, then its summary."""
    import logging

    from rp_agent import agent as agent_module

    monkeypatch.setattr(agent_module, "ONCE_PROGRESS_EVERY_S", 0.0)
    for n in range(40):
        (watch_dir / f"frame_{n:03d}.png").write_bytes(os.urandom(2000))
    config = AgentConfig.build(str(watch_dir), state_dir=str(tmp_path / "st"))
    with caplog.at_level(logging.INFO, logger="rp_agent.agent"):
        assert SyncAgent(config).run(threading.Event(), once=True) == 0
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert progress, "no progress line"
    assert any("of 40 queued file(s) done" in line for line in progress), progress
    assert any(r.getMessage().startswith("finished: 40 file(s) synced") for r in caplog.records)
