"""The code location loads, request keys are stable, and the schedule ticks into one batch run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, RunRequest, SkipReason, build_schedule_context

from rp_agent.keys import pipeline_partition_key
from rp_pipeline.defs.videos.schedules import batch_generation
from rp_pipeline.video_requests.model import VideoRequest, load_request_file, request_key
from tests.pipeline.helpers import r2_now, write_prompts
from tests.tools import uv_command

REPO = Path(__file__).resolve().parents[2]


def test_dg_check_defs_is_green(tmp_path: Path) -> None:
    # uv leaves a lock file per environment in the temp dir (kept on purpose, for reuse):
    # this test's dir takes it.
    proc = subprocess.run(
        [*uv_command(), "run", "dg", "check", "defs"],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully" in proc.stdout + proc.stderr


def test_definitions_expose_the_product_names() -> None:
    from rp_pipeline.definitions import defs

    repo = defs.get_repository_def()
    assets = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"video_requests", "generated_video", "video_preview", "video_catalog"} <= assets
    assert "r2_external_outputs" in assets
    assert {s.name for s in repo.sensor_defs} >= {"r2_new_objects", "pod_reaper"}
    assert {s.name for s in repo.schedule_defs} == {"batch_generation"}
    ops = [n.name for n in repo.get_job("generate_videos").graph.nodes]
    assert ops == ["generated_video"]
    graph = repo.get_job("generate_videos").graph.nodes[0].definition
    assert [n.name for n in graph.nodes_in_topological_order] == [
        "validate_requests", "launch_pod", "wait_for_ready", "submit_workflow",
        "harvest_outputs", "terminate_pod",
    ]  # fmt: skip
    # lineage video_requests -> generated_video -> video_preview -> video_catalog
    graph_deps = repo.asset_graph
    parents = {
        key.to_user_string(): {p.to_user_string() for p in graph_deps.get(key).parent_keys}
        for key in graph_deps.get_all_asset_keys()
    }
    assert parents["generated_video"] == {"video_requests"}
    assert parents["video_preview"] == {"generated_video"}
    assert parents["video_catalog"] == {"video_preview"}


def test_request_keys_are_stable_and_content_addressed() -> None:
    a = VideoRequest(prompt="A fox in snow", seed=1, params={"width": 640})
    assert request_key(a) == request_key(
        VideoRequest(prompt="A fox in snow", seed=1, params={"width": 640})
    )
    assert request_key(a) != request_key(
        VideoRequest(prompt="A fox in snow", seed=2, params={"width": 640})
    )
    assert request_key(a).startswith("a-fox-in-snow-")
    examples = load_request_file(REPO / "prompts" / "examples.yaml")
    assert len({r.key for r in examples}) == len(examples) >= 3
    name = f"video/wan22_ti2v_5b/{a.key}-0123abcd_00001_.mp4"
    assert pipeline_partition_key(f"outputs/2026-01-01/pod/{name}") == a.key
    assert pipeline_partition_key("outputs/2026-01-01/pod/video/ComfyUI_00001_.mp4") is None


def test_schedule_tick_adds_partitions_and_requests_one_batch_run(
    pipeline_env: dict[str, str],
    prompts_dir: Path,
    instance: DagsterInstance,
    resources: dict[str, Any],
) -> None:
    keys = write_prompts(prompts_dir, "sched", 3)
    # Contexts open their own instance from the ref; `with` closes it in order.
    with build_schedule_context(instance=instance, resources={"r2": resources["r2"]}) as context:
        request = batch_generation(context)
    assert isinstance(request, RunRequest)
    assert request.tags["dagster/asset_partition_range_start"] == keys[0]
    assert request.tags["dagster/asset_partition_range_end"] == keys[-1]
    assert instance.get_dynamic_partitions("video_requests") == keys
    assert r2_now().head(f"requests/{keys[0]}.json") is not None
    # Materialized partitions are no longer pending.
    from dagster import AssetKey, AssetMaterialization

    for key in keys:
        instance.report_runless_asset_event(
            AssetMaterialization(AssetKey("generated_video"), partition=key)
        )
    with build_schedule_context(instance=instance, resources={"r2": resources["r2"]}) as context:
        again = batch_generation(context)
    assert isinstance(again, SkipReason)


def test_production_dagster_yaml_example_is_valid_instance_config(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((REPO / "docs" / "dagster.yaml.example").read_text())
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_LOGS_BUCKET", "R2_ENDPOINT"):  # fmt: skip
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
