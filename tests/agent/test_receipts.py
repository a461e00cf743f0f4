"""Upload receipts and shipped log lines: the pod's own report of what it uploaded."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

from rp_agent.keys import receipt_key, seq_of
from rp_agent.queue import UploadQueue
from rp_agent.r2 import R2Settings, make_r2_client
from rp_agent.receipts import ReceiptWriter
from rp_agent.redact import Redactor

from .helpers import (
    agent_env,
    list_objects,
    prefix_of,
    read_pod_logs,
    read_receipts,
    sha256_of,
    wait_for,
)


def latest_by_key(receipts):
    out = {}
    for _, items in receipts:
        for item in items:
            out[item.key] = item
    return out


def test_every_upload_has_a_measured_receipt(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    files = {f"video/clip_{i:05d}_.mp4": os.urandom(20_000 + i) for i in range(30)}
    run = make_agent().start()
    for rel, data in files.items():
        (watch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (watch_dir / rel).write_bytes(data)
    keys = {prefix_of(rel) for rel in files}
    wait_for(lambda: keys <= set(latest_by_key(read_receipts(r2_client, r2_settings.bucket))))
    run.stop()

    receipts = read_receipts(r2_client, r2_settings.bucket)
    by_key = latest_by_key(receipts)
    assert set(by_key) == keys == set(list_objects(r2_client, r2_settings.bucket))
    for rel, data in files.items():
        item = by_key[prefix_of(rel)]
        assert item.path == rel and item.size == len(data) and item.sha256 == sha256_of(data)
        assert item.upload_start is not None
        assert item.close_time <= item.upload_start <= item.upload_done
        assert item.upload_latency_s is not None and item.upload_latency_s > 0
    # Numbered in write order, and no object listed twice without a crash.
    seqs = [seq_of(key) for key, _ in receipts]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert sum(len(items) for _, items in receipts) == len(files)


def test_one_receipt_object_covers_a_whole_burst(tmp_path: Path, r2_settings: R2Settings) -> None:
    client = make_r2_client(r2_settings)
    queue = UploadQueue(tmp_path / "q.sqlite3")
    for i in range(300):
        rel = f"img_{i:03d}.png"
        queue.observe(rel, rel, prefix_of(rel), 10, 1.0, 100.0 + i, check_remote=False)
    for job in queue.claim(300, set()):
        queue.mark_done(job, "ab" * 32, 200.0, True)
    writer = ReceiptWriter(client, r2_settings.bucket, queue, "pod-test", "outputs", lambda: False)
    writer.start()
    wait_for(lambda: not queue.unreceipted())
    writer.stop()
    receipts = read_receipts(client, r2_settings.bucket)
    assert len(receipts) == 1 and len(receipts[0][1]) == 300
    queue.close()


def test_receipts_owed_by_a_crashed_agent_are_written_at_restart(
    make_agent, watch_dir: Path, tmp_path: Path, r2_client, r2_settings: R2Settings
) -> None:
    files = {f"img_{i:03d}.png": os.urandom(50_000) for i in range(40)}
    for rel, data in files.items():
        (watch_dir / rel).write_bytes(data)
    first = make_agent().start(once=True)
    assert first.wait() == 0, first.log()
    # The state a crash between "uploads done" and "receipt written" leaves behind.
    for key, _ in read_receipts(r2_client, r2_settings.bucket):
        r2_client.delete_object(Bucket=r2_settings.bucket, Key=key)
    with sqlite3.connect(tmp_path / "state" / "queue.sqlite3") as db:
        db.execute("UPDATE files SET receipt_seq=NULL")
    second = make_agent().start(once=True)
    assert second.wait() == 0, second.log()
    by_key = latest_by_key(read_receipts(r2_client, r2_settings.bucket))
    assert set(by_key) == {prefix_of(rel) for rel in files}
    assert all(by_key[prefix_of(r)].sha256 == sha256_of(d) for r, d in files.items())
    assert "(0 uploaded by this run)" in second.log()  # receipts only: nothing sent again


def test_killed_mid_burst_then_restarted_every_object_has_a_receipt(
    make_agent, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    run = make_agent().start()
    files = {f"burst/f_{i:03d}.png": os.urandom(200_000) for i in range(60)}
    for rel, data in files.items():
        (watch_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (watch_dir / rel).write_bytes(data)
    wait_for(lambda: len(list_objects(r2_client, r2_settings.bucket)) >= 5, 60, 0.01)
    run.signal(signal.SIGKILL)
    run.wait()
    again = make_agent().start()
    keys = {prefix_of(rel) for rel in files}
    wait_for(lambda: keys <= set(latest_by_key(read_receipts(r2_client, r2_settings.bucket))), 60)
    again.stop()
    by_key = latest_by_key(read_receipts(r2_client, r2_settings.bucket))
    for rel, data in files.items():
        assert by_key[prefix_of(rel)].sha256 == sha256_of(data)


def test_numbers_continue_after_the_bucket_when_the_state_dir_is_lost(
    tmp_path: Path, watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    from .helpers import AgentRun

    def run_once(state: str, name: str) -> None:
        (watch_dir / name).write_bytes(os.urandom(1000))
        run = AgentRun(
            watch_dir, tmp_path / state, agent_env(r2_settings), tmp_path / f"{state}.log"
        ).start(once=True)
        assert run.wait() == 0, run.log()

    run_once("state-a", "a.png")
    run_once("state-b", "b.png")  # a new pod disk: no counter, same pod id
    receipts = read_receipts(r2_client, r2_settings.bucket)
    # The second agent continued the numbering found in the bucket: nothing was overwritten.
    assert [key for key, _ in receipts] == [
        receipt_key("pod-test", n) for n in range(1, len(receipts) + 1)
    ]
    assert {r.key for r in receipts[0][1]} == {prefix_of("a.png")}
    later = latest_by_key(receipts[1:])
    assert later[prefix_of("b.png")].upload_start is not None
    # a.png was found in the bucket with the same sha256: listed, but nothing was sent.
    assert later[prefix_of("a.png")].upload_start is None


def test_log_files_and_agent_lines_reach_the_bucket_without_secrets(
    make_agent, watch_dir: Path, tmp_path: Path, r2_client, r2_settings: R2Settings
) -> None:
    comfy_log = tmp_path / "comfyui.log"
    comfy_log.write_text(
        "Starting server\n"
        f"using key {r2_settings.secret_access_key} oops\n"
        "GET /view?token=abcdef123456 200\n"
        "progress 10%\rprogress 50%\rprogress 100%\n"
    )
    from .helpers import AgentRun

    run = AgentRun(
        watch_dir,
        tmp_path / "state",
        agent_env(r2_settings, RP_AGENT_LOG_FILES=str(comfy_log)),
        tmp_path / "agent.log",
    ).start()
    (watch_dir / "x.png").write_bytes(b"png" * 100)
    wait_for(
        lambda: any(
            "uploaded" in line["msg"] for line in read_pod_logs(r2_client, r2_settings.bucket)
        )
    )
    with comfy_log.open("a") as out:
        out.write("Prompt executed in 1.2 seconds\n")
    wait_for(
        lambda: any(
            "Prompt executed" in line["msg"]
            for line in read_pod_logs(r2_client, r2_settings.bucket)
        )
    )
    run.stop()
    lines = read_pod_logs(r2_client, r2_settings.bucket)
    text = "\n".join(line["msg"] for line in lines)
    assert r2_settings.secret_access_key not in text and "abcdef123456" not in text
    assert {line["src"] for line in lines} >= {"agent", "comfyui"}
    comfy = [line["msg"] for line in lines if line["src"] == "comfyui"]
    assert comfy.count("Starting server") == 1  # offsets: never shipped twice
    assert "progress 100%" in comfy and not any("progress 10%" in m for m in comfy)
    assert any(m.startswith("using key ***") for m in comfy)


def test_redactor_masks_env_values_and_secret_shapes() -> None:
    redact = Redactor({"R2_SECRET_ACCESS_KEY": "s3cr3t-value", "HOME": "/root", "X_TOKEN": "tok"})
    assert redact("key s3cr3t-value here") == "key *** here"
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert redact("url?X-Amz-Signature=deadbeef&x=1") == "url?X-Amz-Signature=***&x=1"
    assert redact("RUNPOD_API_KEY=rpa_123 R2_ACCESS_KEY_ID: set") == (
        "RUNPOD_API_KEY=*** R2_ACCESS_KEY_ID: set"
    )
    assert redact("home is /root") == "home is /root"  # not a secret name


def test_uploads_are_not_hashed_twice_and_the_server_accepts_them(
    r2_settings: R2Settings,
) -> None:
    """The body's sha256 is not recomputed for the signature (UNSIGNED-PAYLOAD): the agent's
    own sha256 already protects it; the S3 server stores the object all the same."""
    client = make_r2_client(r2_settings)
    sent: list[str] = []
    client.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: sent.append(request.headers["X-Amz-Content-SHA256"].decode()),
    )
    client.put_object(Bucket=r2_settings.bucket, Key="k.png", Body=b"x" * 4096)
    assert sent == ["UNSIGNED-PAYLOAD"]
    body = client.get_object(Bucket=r2_settings.bucket, Key="k.png")["Body"].read()
    assert body == b"x" * 4096
