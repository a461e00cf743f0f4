"""The r2_new_objects scan: exactly the new objects, without listing the whole prefix."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dagster import DagsterInstance

from rp_agent.r2 import R2Settings
from rp_pipeline.defs.previews.sensors import r2_new_objects
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.r2.scan import scan
from tests.pipeline.bulk_s3 import bulk_put, threaded_s3
from tests.pipeline.helpers import tick


def _r2(settings: R2Settings) -> R2Resource:
    return R2Resource(
        endpoint=settings.endpoint,
        bucket=settings.bucket,
        access_key_id=settings.access_key_id,
        secret_access_key=settings.secret_access_key,
    )


def _days() -> tuple[str, str]:
    today = datetime.now(tz=UTC).date()
    return (today - timedelta(days=1)).isoformat(), today.isoformat()


def put_many(r2: R2Resource, keys: list[str], workers: int = 24) -> None:
    """moto handles one PUT at a time slowly; many in flight keep it busy."""
    client = r2.client

    def put(key: str) -> None:
        client.put_object(Bucket=r2.bucket, Key=key, Body=b"")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, keys))


def bulk_keys(count: int, days: tuple[str, ...], pods: int) -> list[str]:
    per = count // (len(days) * pods)
    return [
        f"outputs/{day}/pod{p:03d}/video/clip-{i:05d}_00001_.mp4"
        for day in days
        for p in range(1, pods + 1)
        for i in range(per)
    ]


@pytest.mark.slow
def test_scan_of_20000_objects_sees_exactly_the_new_ones() -> None:
    with threaded_s3() as r2:
        _scan_20000(r2)


def _scan_20000(r2: R2Resource) -> None:
    yesterday, today = _days()
    bulk_put(r2.bucket, bulk_keys(20_000, (yesterday, today), pods=10))
    first = scan(r2, None, live_pods=set())
    assert first.bootstrapped and first.new_keys == []

    new = [
        # a pod id that sorts before every pod already seen today
        f"outputs/{today}/pod000/video/fresh-00000001_00001_.mp4",
        f"outputs/{today}/pod000/image/fresh_00001_.png",
        # a late upload on the previous day by pod004, whose agent was restarted (pod live again)
        f"outputs/{yesterday}/pod004/video/zz-late_00001_.mp4",
        # a still-running pod writes a name that sorts before its newest key
        f"outputs/{today}/pod007/video/aaa-early_00001_.mp4",
        # and one that sorts after
        f"outputs/{today}/pod007/video/zzz-later_00001_.mp4",
    ]
    put_many(r2, new)
    second = scan(r2, first.cursor, live_pods={"pod007", "pod004"})
    assert second.new_keys == sorted(new)
    # One listing per day of pods + one per live pod and day: the live pods (1,000 objects on
    # each of the two days) are read in full, never the 20,000; finished pods cost nothing.
    assert second.objects_listed <= 4_000 + len(new), second.objects_listed
    # 2 day listings + 2 live pods x 2 days (1,000+ objects: up to 2 pages each) + 1 new pod
    assert second.list_requests <= 2 + 2 * 2 * 2 + 1, second.list_requests

    third = scan(r2, second.cursor, live_pods={"pod007", "pod004"})
    assert third.new_keys == []


def test_scan_forgets_days_that_left_the_window(r2_settings: R2Settings) -> None:
    r2 = _r2(r2_settings)
    now = time.time()
    old_day = datetime.fromtimestamp(now - 5 * 86400, tz=UTC).date().isoformat()
    today = datetime.fromtimestamp(now, tz=UTC).date().isoformat()
    put_many(
        r2, [f"outputs/{old_day}/podA/video/a_00001_.mp4", f"outputs/{today}/podA/video/b.mp4"]
    )
    first = scan(r2, None, live_pods=None, now=now)
    assert old_day not in first.cursor and today in first.cursor
    put_many(r2, [f"outputs/{today}/podB/video/c_00001_.mp4"])
    assert scan(r2, first.cursor, live_pods=None, now=now).new_keys == [
        f"outputs/{today}/podB/video/c_00001_.mp4"
    ]


def test_sensor_requests_previews_and_records_external_objects(
    r2_settings: R2Settings, devstack: Any, instance: DagsterInstance
) -> None:
    """Someone uses ComfyUI by hand on a running pod: those objects are recorded against
    r2_external_outputs; every new video (ours or not) gets a preview run keyed by its R2 key."""
    from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient, RunPodResource

    r2 = _r2(r2_settings)
    runpod = RunPodResource(
        api_key=devstack.env["RUNPOD_API_KEY"], api_base_url=devstack.env["RUNPOD_API_BASE_URL"]
    )
    client = RunPodClient(devstack.env["RUNPOD_API_KEY"], devstack.env["RUNPOD_API_BASE_URL"])
    pod = client.launch(
        PodSpec(
            image="local/comfyui:test",
            gpu_types=["NVIDIA GeForce RTX 4090"],
            env={"ENABLE_R2_SYNC": "false"},
        ),
        "manual",
    )
    try:
        instance.add_dynamic_partitions("video_requests", ["fox-snow-59dc8d34b8"])
        _, today = _days()
        base = f"outputs/{today}/{pod.id}"
        put_many(r2, [f"{base}/video/old_00001_.mp4"])
        resources = {"r2": r2, "runpod": runpod}
        first, cursor = tick(r2_new_objects, instance, resources)
        assert not first.run_requests

        ours = f"{base}/video/wan22_ti2v_5b/fox-snow-59dc8d34b8-d1d1dc27_00001_.mp4"
        by_hand = f"{base}/video/ComfyUI_00001_.mp4"  # sorts before the pod's newest key
        by_hand_png = f"{base}/ComfyUI_00002_.png"
        put_many(r2, [ours, by_hand, by_hand_png])
        result, _ = tick(r2_new_objects, instance, resources, cursor)
    finally:
        client.terminate(pod.id)
    assert sorted(r.run_key for r in result.run_requests) == sorted([ours, by_hand])
    request = next(r for r in result.run_requests if r.run_key == ours)
    assert request.run_config["ops"]["video_preview"]["config"]["object_keys"] == [ours]
    assert request.tags["rp/origin"] == "dagster"
    external = sorted(e.metadata["r2_key"].value for e in result.asset_events)
    assert external == sorted([by_hand, by_hand_png])
    assert {e.asset_key.to_user_string() for e in result.asset_events} == {"r2_external_outputs"}
