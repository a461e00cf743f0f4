"""Pure logic of the agent: filters, key-safe names, part plans, config errors, queue states."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rp_agent.config import AgentConfig, AgentConfigError, default_state_dir
from rp_agent.paths import DEFAULT_EXTENSIONS, is_candidate, key_safe, parse_extensions
from rp_agent.queue import UploadQueue
from rp_agent.r2 import R2ConfigError
from rp_agent.uploader import MIB, MIN_PART, ObjectMeta, part_size_for, plan_parts
from rp_agent.watcher import Watcher

ENV = {
    "R2_ENDPOINT": "http://127.0.0.1:9",
    "R2_BUCKET": "b",
    "R2_ACCESS_KEY_ID": "k",
    "R2_SECRET_ACCESS_KEY": "s",
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.png", True),
        ("video/clip_00001_.MP4", True),
        ("audio/x.flac", True),
        (".hidden.png", False),
        (".cache/a.png", False),
        ("x/.partial/a.png", False),
        ("a.png.tmp", False),
        ("clip.mp4.part", False),
        ("notes.txt", False),
        ("noext", False),
    ],
)
def test_candidate_filter(path: str, expected: bool) -> None:
    assert is_candidate(path, DEFAULT_EXTENSIONS) is expected


def test_extension_list_parsing() -> None:
    assert parse_extensions(".PNG, mp4  wav") == {"png", "mp4", "wav"}
    assert is_candidate("notes.txt", parse_extensions("*"))
    assert not is_candidate("a.tmp", parse_extensions("*"))
    with pytest.raises(ValueError, match="empty"):
        parse_extensions(" , ")


def test_key_safe_percent_encodes_only_undecodable_bytes() -> None:
    raw = os.fsdecode(b"caf\xe9/\xff\xfeclip.mp4")
    assert key_safe(raw) == "caf%E9/%FF%FEclip.mp4"
    assert key_safe("vidéo/日本.png") == "vidéo/日本.png"
    key_safe(raw).encode("utf-8")  # valid UTF-8


@pytest.mark.parametrize("size", [6 * MIB, 64 * MIB, 64 * MIB + 1, 200 * MIB, 100_000 * MIB])
def test_part_plan_equal_parts_within_s3_limits(size: int) -> None:
    part = part_size_for(size, 8 * MIB)
    parts = plan_parts(size, part)
    assert sum(length for _, length in parts) == size
    assert len(parts) <= 10_000
    assert all(length == part for _, length in parts[:-1])
    assert MIN_PART <= part <= 5 * 1024 * MIB
    assert 0 < parts[-1][1] <= part


def test_metadata_is_ascii_and_has_contract_keys() -> None:
    meta = ObjectMeta(sha256="ab" * 32, close_time=1767225599.1234, upload_start=1767225600.5)
    values = meta.as_metadata()
    assert values == {
        "sha256": "ab" * 32,
        "close-time": "1767225599.123",
        "upload-start": "1767225600.500",
    }


def test_config_missing_env_names_variables(tmp_path: Path) -> None:
    with pytest.raises(R2ConfigError, match="R2_BUCKET"):
        AgentConfig.build(str(tmp_path), environ={"R2_ENDPOINT": "http://x"})


def test_config_missing_watch_dir(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="does not exist"):
        AgentConfig.build(str(tmp_path / "nope"), environ=ENV)


def test_config_state_dir_must_be_outside_watch_dir(tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="must not be inside"):
        AgentConfig.build(str(tmp_path), state_dir=str(tmp_path / "st"), environ=ENV)


def test_default_state_dir_is_per_watch_dir_and_outside_it(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path / "home")}
    a = default_state_dir(tmp_path / "a", env)
    b = default_state_dir(tmp_path / "b", env)
    assert a != b and a.parent == b.parent
    assert default_state_dir(tmp_path / "a", {"RP_AGENT_STATE_DIR": "/srv/st"}) == Path("/srv/st")
    config = AgentConfig.build(str(tmp_path), environ={**ENV, "RP_AGENT_EXTENSIONS": "png"})
    assert tmp_path.resolve() not in config.state_dir.parents
    assert config.extensions == {"png"}


def test_queue_recovers_rows_left_uploading(tmp_path: Path) -> None:
    queue = UploadQueue(tmp_path / "q.sqlite3")
    assert queue.observe("a.png", "a.png", "k/a.png", 10, 1.0, 2.0)
    assert not queue.observe("a.png", "a.png", "k/a.png", 10, 1.0, 3.0)  # same version
    [job] = queue.claim(8, set())
    assert queue.counts()["uploading"] == 1
    queue.close()

    reopened = UploadQueue(tmp_path / "q.sqlite3")  # as after kill -9
    assert reopened.recover(retry_failed=False) == 1
    [again] = reopened.claim(8, set())
    assert again.path == job.path


def test_queue_new_version_wins_over_stale_upload(tmp_path: Path) -> None:
    queue = UploadQueue(tmp_path / "q.sqlite3")
    queue.observe("a.png", "a.png", "k/a.png", 10, 1.0, 2.0)
    [old] = queue.claim(8, set())
    assert queue.observe("a.png", "a.png", "k/a.png", 20, 5.0, 6.0)  # rewritten meanwhile
    assert not queue.mark_done(old, "0" * 64, 1.0, uploaded=True)
    assert queue.counts() == {"pending": 1, "uploading": 0, "done": 0, "failed": 0}
    assert queue.claim(8, {"a.png"}) == []  # never two uploads of one path at once


def test_queue_keeps_non_utf8_paths_exactly(tmp_path: Path) -> None:
    queue = UploadQueue(tmp_path / "q.sqlite3")
    raw = os.fsdecode(b"bad\xffname.png")
    queue.observe(raw, key_safe(raw), "k/" + key_safe(raw), 1, 1.0, 1.0)
    [job] = queue.claim(1, set())
    assert os.fsencode(job.path) == b"bad\xffname.png"
    assert job.display == "bad%FFname.png"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    from rp_agent.agent import backoff_delay

    early = [backoff_delay(0) for _ in range(200)]
    late = [backoff_delay(10) for _ in range(200)]
    assert all(0.25 <= d <= 0.5 for d in early)
    assert all(0.25 <= d <= 30.0 for d in late)
    assert max(late) > 10 and len(set(late)) > 100  # jittered, and far above the first delay


def test_new_directory_is_walked_again_after_the_settle_window(tmp_path: Path) -> None:
    """A file that lands in a new directory after the agent's first look (and before watchdog's
    inotify watch on it exists) is found by the second walk, not left for the periodic rescan."""

    emitted: list[str] = []
    watcher = Watcher(
        str(tmp_path),
        frozenset({"mp4"}),
        sink=lambda rel, size, mtime, close_time, live: emitted.append(rel),
        known=lambda rel, size, mtime: rel in emitted,
        settle_seconds=0.05,
        rescan_interval=3600,
    )
    new_dir = tmp_path / "video"
    new_dir.mkdir()
    watcher._handle("dir", str(new_dir), time.time())  # the first look: still empty
    (new_dir / "clip_00001_.mp4").write_bytes(b"frames")
    assert watcher.settling() == 0
    time.sleep(0.1)
    watcher.recheck_new_dirs()
    assert watcher.settling() == 1
    deadline = time.time() + 5
    while not emitted and time.time() < deadline:
        time.sleep(0.02)
        watcher.poll()
    assert emitted == ["video/clip_00001_.mp4"]
    watcher.recheck_new_dirs()  # walked once more only: nothing new is offered
    assert watcher.settling() == 0
