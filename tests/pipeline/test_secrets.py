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
from rp_pipeline.sensors.r2_objects import r2_new_objects
from rp_pipeline.sensors.teardown import pod_reaper
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


@pytest.fixture
def sentinel_emulator(tmp_path: Path) -> Iterator[RunPodEmulator]:
    emulator = RunPodEmulator(
        tmp_path / "runpod",
        RUNPOD_SENTINEL,
        boot_delay_s=0.3,
        agent_grace_s=10.0,
        secrets_store={"R2_ACCESS_KEY_ID": "sentinel-id", "R2_SECRET_ACCESS_KEY": R2_SENTINEL},
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
        "R2_ACCESS_KEY_ID": "sentinel-id",
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
        if path.is_file()
        and any(s.encode() in path.read_bytes() for s in (RUNPOD_SENTINEL, R2_SENTINEL))
    ]
    assert leaks == [], f"secret found in {leaks}"
    scanned = list(home.rglob("*.db")) + list(home.rglob("*.out")) + list(home.rglob("*.err"))
    assert scanned, "expected sqlite storage to scan"
    for text in (caplog.text, repr(metadata), "\n".join(events), repr(resources)):
        assert RUNPOD_SENTINEL not in text and R2_SENTINEL not in text
