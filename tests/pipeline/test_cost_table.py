"""The cost table and the GPU order it gives, from plain event rows (no run needed)."""

from __future__ import annotations

from typing import Any

import pytest

from rp_pipeline.money.cost_table import VideoEvent, cost_rows, frame_class, samples
from rp_pipeline.money.gpu_choice import GpuChoiceError, Workload, order_gpu_types

FAST, CHEAP, NEW = "FAST", "CHEAP", "NEW"


def video(run: str, key: str, gpu: str, pod: str, cost: float, price: float, gen: float) -> Any:
    md = {
        "gpu_type": gpu, "pod_id": pod, "cost_usd": cost, "cost_per_hr": price,
        "generation_time_s": gen, "workflow": "wf", "width": 320, "height": 192, "frames": 9,
    }  # fmt: skip
    return VideoEvent(run, key, md)


def settled(run: str, key: str, pod: str, cost: float, **extra: Any) -> VideoEvent:
    return VideoEvent(run, key, {"cost_settled": True, "cost_usd": cost, "pod_id": pod, **extra})


def test_boot_and_idle_are_spread_over_the_pods_videos() -> None:
    # One pod at $3.6/h ($0.001/s): the first video paid a 10 s boot (its share 12 s), the
    # second 2 s; an adopted pod's 4 s of idle and a failed partition's 2 s are unpaid.
    mats = [
        video("r1", "a", FAST, "p1", 0.0, 3.6, 2.0),
        video("r1", "b", FAST, "p1", 0.0, 3.6, 2.0),
    ]
    obs = [
        settled("r1", "a", "p1", 0.012, pod_idle_cost_usd=0.004, produced=True),
        settled("r1", "b", "p1", 0.002, pod_idle_cost_usd=0.004, produced=True),
        settled("r1", "c", "p1", 0.002, pod_idle_cost_usd=0.004, produced=False),
    ]
    got = samples(mats, obs)
    assert [round(s.billed_s, 6) for s in got] == [10.0, 10.0]  # (12 + 2 + 4 + 2) / 2
    [row] = cost_rows(got)
    assert (row.videos, row.median_billed_s, row.usd_per_video) == (2, 10.0, 0.01)
    assert (row.resolution, row.frames, row.median_generation_s) == ("320x192", "<=33", 2.0)


def test_a_recovered_video_and_an_unsettled_one() -> None:
    recovered = VideoEvent("r2", "x", {"recovered_from_run": "r1", "cost_usd": 0.0})
    unsettled = video("r3", "y", CHEAP, "p3", 0.005, 1.8, 5.0)  # provisional cost used
    [one] = samples([recovered, unsettled], [])
    assert (one.gpu_type, round(one.billed_s, 6)) == (CHEAP, 10.0)


def test_frame_classes() -> None:
    assert [frame_class(f) for f in (9, 33, 34, 121, 200, None)] == [
        "<=33", "<=33", "<=49", "<=121", ">121", "?"
    ]  # fmt: skip


def table() -> list[Any]:
    # FAST: $2/h, 2 s per video; CHEAP: $1/h, but 6 s per video: dearer per video.
    mats = [video("r1", f"f{i}", FAST, "p1", 2 * 2 / 3600, 2.0, 2.0) for i in range(3)]
    mats += [video("r2", f"c{i}", CHEAP, "p2", 6 / 3600, 1.0, 6.0) for i in range(3)]
    measured = samples(mats, [])
    return cost_rows(measured) + cost_rows(measured, by_size=False)


WORK = Workload("wf", "320x192", "<=33", 3)
PRICES = {FAST: 2.0, CHEAP: 1.0, NEW: 0.5}


def test_cheapest_per_video_puts_the_measured_cheapest_first_and_unmeasured_last() -> None:
    order = order_gpu_types("cheapest-per-video", [CHEAP, NEW, FAST], table(), PRICES, WORK)
    assert order.gpu_types == (FAST, CHEAP, NEW)
    assert "FAST: $0.0011/video, 2.0 s generation, 3 video(s)" in order.reason
    assert "NEW: not measured, $0.50/h" in order.reason


def test_preference_keeps_the_order_given() -> None:
    order = order_gpu_types("preference", [CHEAP, FAST], table(), PRICES, WORK)
    assert order.gpu_types == (CHEAP, FAST)


def test_exploration_tries_a_type_with_too_few_videos_first() -> None:
    order = order_gpu_types(
        "cheapest-per-video", [CHEAP, NEW, FAST], table(), PRICES, WORK, explore_videos=2
    )
    assert order.gpu_types == (NEW, FAST, CHEAP)
    assert "exploring NEW" in order.reason


def test_another_size_falls_back_to_the_workflow_over_all_sizes() -> None:
    big = Workload("wf", "1280x704", "<=121", 1)
    order = order_gpu_types("cheapest-per-video", [CHEAP, FAST], table(), PRICES, big)
    assert order.gpu_types == (FAST, CHEAP)
    assert "all sizes" in order.reason
    other = Workload("other", "320x192", "<=33", 1)
    unmeasured = order_gpu_types("cheapest-per-video", [FAST, CHEAP], table(), PRICES, other)
    assert unmeasured.gpu_types == (CHEAP, FAST)  # by $/h


def test_fastest_under_a_ceiling() -> None:
    fastest = order_gpu_types("fastest", [CHEAP, FAST], table(), PRICES, WORK)
    assert fastest.gpu_types == (FAST, CHEAP)
    capped = order_gpu_types(
        "fastest", [CHEAP, FAST], table(), PRICES, WORK, max_usd_per_video=0.0015
    )
    assert capped.gpu_types == (FAST,)  # CHEAP is slower and over the ceiling per video
    assert "skipped CHEAP: dearer" in capped.reason
    with pytest.raises(GpuChoiceError, match=r"RP_GPU_MAX_USD_PER_VIDEO=\$0\.0010"):
        order_gpu_types("fastest", [CHEAP, FAST], table(), PRICES, WORK, max_usd_per_video=0.001)


def test_rp_launch_gpus_shows_the_measured_cost_beside_price_and_stock(
    runpod_emulator: Any, tmp_path: Any
) -> None:
    import json

    from dagster import AssetMaterialization, DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from rp_pipeline.asset_keys import GENERATED_VIDEO
    from tests.rp_launch import one_line_error, only_base_url_and_key

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    gpu = "NVIDIA GeForce RTX 4090"
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        for key in ("a", "b"):
            md = video("", key, gpu, "p1", 0.002, 3.6, 1.5).metadata
            instance.report_runless_asset_event(
                AssetMaterialization(GENERATED_VIDEO, partition=key, metadata=md)
            )
    shown = only_base_url_and_key(
        runpod_emulator, "gpus", "--workflow", "wf", "--json", DAGSTER_HOME=str(home)
    )
    assert shown.returncode == 0, shown.stderr
    by_id = {g["id"]: g for g in json.loads(shown.stdout)}
    assert by_id[gpu]["secure_price"] == 0.69 and by_id[gpu]["availability"] == "HIGH"
    measured = by_id[gpu]["measured"]
    assert [(r["resolution"], r["videos"], r["usd_per_video"]) for r in measured] == [
        ("all", 2, 0.002), ("320x192", 2, 0.002)
    ]  # fmt: skip
    assert by_id["NVIDIA RTX A6000"]["measured"] == []
    text = only_base_url_and_key(
        runpod_emulator, "gpus", "--workflow", "wf", DAGSTER_HOME=str(home)
    )
    assert "2 video(s)  $0.0020/video  median 1.5 s generation, 2.0 s billed" in text.stdout
    assert "no video of wf measured" in text.stdout
    no_home = only_base_url_and_key(runpod_emulator, "gpus", "--workflow", "wf")
    assert "set DAGSTER_HOME" in one_line_error(no_home, 2)


def test_a_runs_workload_takes_the_workflows_own_size_where_requests_give_none() -> None:
    """The table keys videos by what they measure; a request that leaves the size to the
    workflow renders the workflow's size, so that is the row the choice must read."""
    from types import SimpleNamespace

    sized = SimpleNamespace(workflow_name="wan22_ti2v_5b", request={"params": {"width": 320}})
    bare = SimpleNamespace(workflow_name="wan22_ti2v_5b", request={"prompt": "a kite"})
    workload = Workload.of([bare, bare, sized])
    assert workload is not None
    assert (workload.workflow, workload.resolution, workload.frames) == (
        "wan22_ti2v_5b",
        "1280x704",
        "<=121",
    )
    assert workload.videos == 2
