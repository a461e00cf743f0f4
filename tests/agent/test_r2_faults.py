"""R2 answering errors while the pod boots: the agent keeps uploading outputs, and what it owes
under `_rp/` (receipts, log lines) catches up once R2 answers again.

The real `rp-agent sync` against the moto server behind an HTTP proxy that fails chosen requests
(rp_devstack.http_faults), as R2 does when a part of a bucket misbehaves.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rp_agent.agent import SyncAgent
from rp_agent.clock import SKEW_ENV
from rp_agent.config import AgentConfig
from rp_agent.r2 import R2Settings
from rp_devstack.http_faults import HttpFaultProxy
from rp_devstack.s3 import LocalS3

from .helpers import AgentRun, agent_env, list_objects, read_pod_logs, read_receipts, wait_for

CONTROL = "/_rp/"


@pytest.fixture
def faulty_r2(
    local_s3: LocalS3, r2_settings: R2Settings
) -> Iterator[tuple[HttpFaultProxy, R2Settings]]:
    proxy = HttpFaultProxy("127.0.0.1", local_s3.port).start()
    try:
        yield proxy, dataclasses.replace(r2_settings, endpoint=proxy.url)
    finally:
        proxy.stop()


def test_a_500_under_the_reserved_prefix_at_boot_does_not_stop_uploads(
    faulty_r2: tuple[HttpFaultProxy, R2Settings],
    make_agent: Callable[..., AgentRun],
    watch_dir: Path,
    r2_client,
    r2_settings: R2Settings,
) -> None:
    proxy, through_proxy = faulty_r2
    proxy.fail(CONTROL, status=500)  # receipts, logs: listing and writing all fail
    agent = make_agent(settings=through_proxy).start()
    (watch_dir / "clip_00001_.mp4").write_bytes(b"video bytes")

    outputs = wait_for(lambda: list_objects(r2_client, r2_settings.bucket), timeout=30)
    assert [key.rsplit("/", 1)[-1] for key in outputs] == ["clip_00001_.mp4"]
    assert agent.process is not None and agent.process.poll() is None, agent.log()
    wait_for(lambda: proxy.failed.get(CONTROL, 0) >= 2, timeout=30)  # receipts and logs tried
    assert agent.process.poll() is None, agent.log()
    assert read_receipts(r2_client, r2_settings.bucket) == []

    proxy.heal()
    receipts = wait_for(lambda: read_receipts(r2_client, r2_settings.bucket), timeout=30)
    listed = [r.path for _, batch in receipts for r in batch]
    assert listed == ["clip_00001_.mp4"]
    # The agent's lines from the outage reach the bucket too, the first upload's among them.
    wait_for(
        lambda: any(
            "uploaded clip_00001_.mp4" in line["msg"]
            for line in read_pod_logs(r2_client, r2_settings.bucket)
        ),
        timeout=30,
    )


def test_a_failing_bucket_check_at_boot_does_not_stop_the_agent(
    faulty_r2: tuple[HttpFaultProxy, R2Settings],
    make_agent: Callable[..., AgentRun],
    watch_dir: Path,
    r2_client,
    r2_settings: R2Settings,
) -> None:
    proxy, through_proxy = faulty_r2
    proxy.fail(f"/{r2_settings.bucket}", status=500, method="HEAD", exact=True)  # HeadBucket
    agent = make_agent(settings=through_proxy).start()
    (watch_dir / "clip_00002_.mp4").write_bytes(b"more video bytes")

    wait_for(lambda: list_objects(r2_client, r2_settings.bucket), timeout=30)
    assert agent.process is not None and agent.process.poll() is None
    assert "cannot reach bucket" in agent.log()


def test_receipts_report_durations_that_a_skewed_pod_clock_leaves_right(
    make_agent: Callable[..., AgentRun], watch_dir: Path, r2_client, r2_settings: R2Settings
) -> None:
    """The pod's clock 10 min ahead: its stamps are 10 min ahead too (they are its clock's), but
    the durations a reader subtracts with (`latency_s`, `age_s`) stay small and non-negative."""
    skew_s = 600.0
    run = make_agent()
    run.env[SKEW_ENV] = str(skew_s)
    run.start()
    before = time.time()
    (watch_dir / "clip_00003_.mp4").write_bytes(b"skewed")
    receipts = wait_for(lambda: read_receipts(r2_client, r2_settings.bucket), timeout=30)
    key = receipts[0][0]
    line = json.loads(r2_client.get_object(Bucket=r2_settings.bucket, Key=key)["Body"].read())
    assert line["upload_done"] - before == pytest.approx(skew_s, abs=30)  # the injection works
    assert 0 <= line["latency_s"] < 10
    assert 0 <= line["age_s"] < 10
    assert receipts[0][1][0].age_s == line["age_s"]


def test_a_watching_agent_retries_files_that_failed_once_r2_takes_them_again(
    faulty_r2: tuple[HttpFaultProxy, R2Settings],
    watch_dir: Path,
    tmp_path: Path,
    r2_client,
    r2_settings: R2Settings,
) -> None:
    """R2 refuses the outputs for a while (403: a refusal the agent does not retry at once):
    the file is marked failed, and the watching agent queues it again by itself."""
    proxy, through_proxy = faulty_r2
    proxy.fail("/outputs/2", status=403, method="PUT")  # output keys start with the day
    environ = agent_env(through_proxy)
    config = AgentConfig.build(str(watch_dir), state_dir=str(tmp_path / "st"), environ=environ)
    agent = SyncAgent(dataclasses.replace(config, failed_retry_interval=1.0))
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    runner.start()
    try:
        (watch_dir / "clip_00004_.mp4").write_bytes(b"refused for a while")
        wait_for(lambda: agent.queue.counts()["failed"] == 1, timeout=30)
        proxy.heal()
        wait_for(lambda: list_objects(r2_client, r2_settings.bucket), timeout=30)
        assert agent.queue.counts()["done"] == 1
    finally:
        stop.set()
        runner.join(timeout=30)
        agent.queue.close()
