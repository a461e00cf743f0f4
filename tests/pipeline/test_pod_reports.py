"""The pipeline reading a real rp-agent's receipts and log lines from a real S3 server."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rp_agent.r2 import R2Settings
from rp_pipeline.integrations.r2.reports import forward_pod_logs, wait_for_receipt
from rp_pipeline.integrations.r2.resource import R2Resource
from tests.agent.helpers import AgentRun, agent_env, prefix_of, sha256_of, wait_for


class Recorder:
    """Stands where `context.log` goes: keeps (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, msg: str) -> None:
        self.lines.append(("info", msg))

    def warning(self, msg: str) -> None:
        self.lines.append(("warning", msg))

    def error(self, msg: str) -> None:
        self.lines.append(("error", msg))


def resource(settings: R2Settings) -> R2Resource:
    return R2Resource(
        endpoint=settings.endpoint,
        bucket=settings.bucket,
        access_key_id=settings.access_key_id,
        secret_access_key=settings.secret_access_key,
    )


def test_threads_wait_for_their_receipts_and_logs_reach_the_run(
    tmp_path: Path, r2_settings: R2Settings
) -> None:
    watch = tmp_path / "output"
    watch.mkdir()
    comfy_log = tmp_path / "comfyui.log"
    comfy_log.write_text(
        f"loading with R2 secret {r2_settings.secret_access_key}\n"
        + "".join(f"step {i}\n" for i in range(30))
    )
    agent = AgentRun(
        watch,
        tmp_path / "state",
        agent_env(r2_settings, RP_AGENT_LOG_FILES=str(comfy_log)),
        tmp_path / "agent.log",
    ).start()
    r2 = resource(r2_settings)
    files = {f"video/clip_{i}.mp4": os.urandom(10_000 + i) for i in range(4)}
    try:
        with ThreadPoolExecutor(4) as pool:
            # Each thread waits before its file exists, as per-pod workers do.
            waits = {rel: pool.submit(wait_for_receipt, r2, "pod-test", rel, 60.0) for rel in files}
            for rel, data in files.items():
                (watch / rel).parent.mkdir(parents=True, exist_ok=True)
                (watch / rel).write_bytes(data)
            found = {rel: future.result() for rel, future in waits.items()}
        for rel, data in files.items():
            receipt = found[rel]
            assert receipt is not None and receipt.key == prefix_of(rel)
            assert receipt.sha256 == sha256_of(data) and receipt.size == len(data)
        assert wait_for_receipt(r2, "pod-test", "never/written.mp4", 0.0) is None

        log = Recorder()
        cursor = wait_for(lambda: _forwarded(r2, log), 30)
    finally:
        agent.stop()
    text = "\n".join(msg for _, msg in log.lines)
    assert "[pod pod-test comfyui] step 0" in text
    assert r2_settings.secret_access_key not in text
    assert "[pod pod-test agent] uploaded video/clip_0.mp4" in text

    # The cursor moves on: what was forwarded is never forwarded again.
    again = Recorder()
    forward_pod_logs(r2, "pod-test", cursor, again)
    assert not any("step 0" in msg for _, msg in again.lines)

    # Rate limit: at most max_lines per call, the rest counted in one warning.
    limited = Recorder()
    forward_pod_logs(r2, "pod-test", None, limited, max_lines=5)
    assert len([1 for level, _ in limited.lines if level == "info"]) <= 5
    assert "not shown (rate limit)" in limited.lines[-1][1]


def _forwarded(r2: R2Resource, log: Recorder) -> object:
    """Forward everything shipped so far, once it includes all four uploads and the last step."""
    probe = Recorder()
    cursor = forward_pod_logs(r2, "pod-test", None, probe, max_lines=10_000)
    text = "\n".join(msg for _, msg in probe.lines)
    wanted = [f"uploaded video/clip_{i}.mp4" for i in range(4)] + ["step 29"]
    if not all(item in text for item in wanted):
        return None
    log.lines[:] = probe.lines
    return cursor


def test_when_an_object_landed_is_read_on_the_runs_clock(r2_settings: R2Settings) -> None:
    """A pod whose clock is 10 min ahead (or behind) reports its uploads at its own time; the
    run dates each object from when it read the receipt less how long the receipt waited on
    the pod, so no cost share or lag mixes the two clocks. The latest receipt object of a
    path wins, whatever its time stamps say."""
    import time

    from rp_agent.keys import receipt_key
    from rp_agent.receipts import Receipt, encode
    from rp_pipeline.integrations.r2.reports import find_receipt, landed_at

    r2 = resource(r2_settings)
    for pod_id, skew in (("pod-ahead", 600.0), ("pod-behind", -600.0)):
        pod_now = time.time() + skew
        first = Receipt("k/a", "video/a.mp4", 10, "0" * 64, pod_now - 3, pod_now - 2, pod_now - 1)
        # A later upload of the same path whose stamps read earlier (the pod's clock stepped).
        again = Receipt("k/a", "video/a.mp4", 11, "1" * 64, pod_now - 9, pod_now - 8, pod_now - 7)
        r2.put_bytes(receipt_key(pod_id, 1, r2.prefix), encode([first], pod_now), "text/plain")
        r2.put_bytes(receipt_key(pod_id, 2, r2.prefix), encode([again], pod_now), "text/plain")
        found = find_receipt(r2, pod_id, "video/a.mp4")
        assert found is not None and found.size == 11
        landed = landed_at(r2, pod_id, found)
        assert abs(landed - (time.time() - 7)) < 5, (skew, landed - time.time())


def test_a_stopped_heartbeat_ends_the_wait_for_a_receipt_early(r2_settings: R2Settings) -> None:
    """The agent beats every couple of seconds while it runs. While the beat is fresh the run
    waits for a receipt up to its deadline; once the beat is older than `stale_after_s` on R2's
    clock (the agent is gone) the wait ends at once instead of billing the pod to the deadline.
    No heartbeat at all (an older agent) leaves the deadline in charge."""
    import time

    from rp_agent.heartbeat import Heartbeat
    from rp_pipeline.integrations.r2.reports import heartbeat_age

    r2 = resource(r2_settings)
    # Never beaten: no verdict, the full (short) deadline is waited.
    assert heartbeat_age(r2, "pod-quiet") is None
    started = time.monotonic()
    assert wait_for_receipt(r2, "pod-quiet", "video/a.mp4", 2.0, stale_after_s=0.5) is None
    assert time.monotonic() - started >= 2.0

    beating = Heartbeat(r2.client, r2.bucket, "pod-alive", r2.prefix, interval=0.5)
    beating.start()
    try:
        started = time.monotonic()
        assert wait_for_receipt(r2, "pod-alive", "video/a.mp4", 4.0, stale_after_s=2.0) is None
        assert time.monotonic() - started >= 4.0  # alive: the deadline, not the heartbeat
        age = heartbeat_age(r2, "pod-alive")
        assert age is not None and age < 2.0
    finally:
        beating.stop()

    dead = Heartbeat(r2.client, r2.bucket, "pod-dead", r2.prefix)
    assert dead.beat()  # one beat, then the agent dies
    started = time.monotonic()
    assert wait_for_receipt(r2, "pod-dead", "video/a.mp4", 60.0, stale_after_s=1.0) is None
    assert time.monotonic() - started < 10.0  # R2's stamps are whole seconds: about 2-3 s
