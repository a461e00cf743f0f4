"""Secrets given as sentinel values never reach the instance's storage, logs or metadata."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import instance_for_test

from rp_agent.r2 import R2Settings
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.definitions import resources_for
from rp_pipeline.defs.previews.sensors import r2_new_objects
from rp_pipeline.defs.teardown.sensors import pod_reaper
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    preview_and_catalog,
    register_requests,
    tick,
    write_prompts,
)

RUNPOD_SENTINEL = f"SENTINEL-RUNPOD-{uuid.uuid4().hex}"
R2_SENTINEL = f"SENTINEL-SECRET-{uuid.uuid4().hex}"
# The access key id is half a credential, and SigV4 presigned URLs carry it in the clear.
KEY_ID_SENTINEL = f"SENTINELKEYID{uuid.uuid4().hex[:12].upper()}"
SENTINELS = (RUNPOD_SENTINEL, R2_SENTINEL, KEY_ID_SENTINEL)


@pytest.fixture
def sentinel_emulator(tmp_path: Path) -> Iterator[RunPodEmulator]:
    emulator = RunPodEmulator(
        tmp_path / "runpod",
        RUNPOD_SENTINEL,
        boot_delay_s=0.3,
        agent_grace_s=10.0,
        secrets_store={"R2_ACCESS_KEY_ID": KEY_ID_SENTINEL, "R2_SECRET_ACCESS_KEY": R2_SENTINEL},
    )
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.mark.slow
def test_sentinel_secrets_stay_out_of_storage_logs_and_metadata(
    sentinel_emulator: RunPodEmulator,
    r2_settings: R2Settings,
    prompts_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {
        "RUNPOD_API_KEY": RUNPOD_SENTINEL,
        "RUNPOD_API_BASE_URL": sentinel_emulator.base_url,
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": KEY_ID_SENTINEL,
        "R2_SECRET_ACCESS_KEY": R2_SENTINEL,
        "RP_ENV": "devstack",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RUNPOD_NETWORK_VOLUME_ID", raising=False)
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    keys = write_prompts(prompts_dir, "sentinel", 1)
    resources = resources_for("devstack")
    with instance_for_test(temp_dir=str(home)) as instance:
        register_requests(instance, resources)
        result = generate(instance, resources, keys)
        assert result.success
        assert preview_and_catalog(instance, resources).success
        for sensor in (r2_new_objects, pod_reaper):
            tick(sensor, instance, resources)
        metadata = latest_by_partition(instance)[keys[0]]
        events = [str(record) for record in instance.all_logs(result.run_id)]

    assert all(p["desired_status"] == "TERMINATED" for p in sentinel_emulator.pods())
    leaks = [
        str(path.relative_to(home))
        for path in home.rglob("*")
        if path.is_file() and any(s.encode() in path.read_bytes() for s in SENTINELS)
    ]
    assert leaks == [], f"secret found in {leaks}"
    scanned = list(home.rglob("*.db")) + list(home.rglob("*.out")) + list(home.rglob("*.err"))
    assert scanned, "expected sqlite storage to scan"
    # botocore's own DEBUG wire log prints each request's Authorization header (key id included)
    # by design; it is silent unless someone enables DEBUG for botocore and never reaches Dagster.
    logged = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.INFO or not record.name.startswith(("botocore", "urllib3"))
    )
    assert "presigned_url" not in metadata and str(metadata["r2_url"]).startswith("s3://")
    for text in (logged, repr(metadata), "\n".join(events), repr(resources)):
        assert not [s for s in SENTINELS if s in text]


def test_rp_video_url_presigns_on_demand_with_one_line_errors(
    r2_settings: R2Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rp_pipeline.tools.video import main
    from tests.pipeline.helpers import r2_now

    for name, value in {
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
    }.items():
        monkeypatch.setenv(name, value)
    key = f"outputs/2026-01-01/pod/video/w/k-{uuid.uuid4().hex[:8]}_00001_.mp4"
    r2_now().put_bytes(key, b"video", "video/mp4")

    assert main(["url", f"s3://{r2_settings.bucket}/{key}", "--expires", "600"]) == 0
    url = capsys.readouterr().out.strip()
    assert "X-Amz-Expires=600" in url and r2_settings.access_key_id in url
    import requests

    assert requests.get(url, timeout=10).content == b"video"

    assert main(["url", key + ".missing"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no object" in err
    monkeypatch.delenv("R2_SECRET_ACCESS_KEY")
    assert main(["url", key]) == 2
    assert "R2_SECRET_ACCESS_KEY not set" in capsys.readouterr().err
