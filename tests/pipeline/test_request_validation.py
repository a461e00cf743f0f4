"""Malformed requests: one clear line each, no pod, and the good entries still register."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, build_schedule_context, materialize

from rp_devstack.stack import Devstack
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.schedules import batch_generation
from rp_pipeline.video_requests.model import VideoRequest, scan_requests
from tests.pipeline.helpers import SMALL

GOOD = {"prompt": "a calm lake at dawn", "seed": 1, "params": SMALL}
BAD_ENTRIES = [
    ({"prompt": "x", "seed": "abc"}, "'seed' must be a whole number or null (random), got str"),
    ({"prompt": "x", "seed": 1.5}, "got float 1.5"),
    ({"seed": 3}, "'prompt' is missing"),
    ({"prompt": "x", "params": "wide"}, "'params' must be a mapping"),
    ({"prompt": "x", "params": {**SMALL, "frames": 16385}}, "frames must be 4n+1 between 1 and"),
    (["not", "a", "mapping"], "must be a mapping or a prompt string, got list"),
]


def write_file(directory: Path) -> Path:
    path = directory / "mixed.yaml"
    entries = [GOOD] + [entry for entry, _ in BAD_ENTRIES] + [{**GOOD, "seed": 2}]
    path.write_text(yaml.safe_dump({"requests": entries}))
    return path


def test_each_bad_entry_is_one_line_naming_file_and_index(tmp_path: Path) -> None:
    path = write_file(tmp_path)
    scan = scan_requests(tmp_path)
    assert len(scan.requests) == 2  # the good first and last entries
    assert len(scan.problems) == len(BAD_ENTRIES)
    for index, (problem, (_, needle)) in enumerate(zip(scan.problems, BAD_ENTRIES, strict=True)):
        assert problem.startswith(f"{path}: entry {index + 1}: "), problem
        assert needle in problem, problem
        assert "\n" not in problem and "Traceback" not in problem


def test_asset_and_schedule_register_the_good_entries_and_report_the_bad(
    pipeline_env: dict[str, str],
    prompts_dir: Path,
    instance: DagsterInstance,
    resources: dict[str, Any],
) -> None:
    write_file(prompts_dir)
    result = materialize([video_requests], instance=instance, resources=resources)
    assert result.success
    [mat] = result.asset_materializations_for_node("video_requests")
    assert mat.metadata["requests"].value == 2
    assert mat.metadata["invalid"].value == len(BAD_ENTRIES)
    assert "mixed.yaml: entry 3: 'prompt' is missing" in mat.metadata["problems"].value
    warnings = [
        e.message for e in instance.all_logs(result.run_id) if "not registered" in e.message
    ]
    assert len(warnings) == len(BAD_ENTRIES)
    assert len(instance.get_dynamic_partitions("video_requests")) == 2

    (prompts_dir / "more.yaml").write_text(yaml.safe_dump([{**GOOD, "seed": 9}, {"seed": 1}]))
    with build_schedule_context(instance=instance, resources=resources) as context:
        run = batch_generation(context)
    assert len(instance.get_dynamic_partitions("video_requests")) == 3
    assert run.tags["rp/batch_size"] == "3"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"prompt": "x", "seed": "abc"}, "'seed' must be a whole number"),
        ({"prompt": "x", "seed": 1.5}, "got float 1.5"),
        ({"seed": 1}, "'prompt' is missing"),
        ({"prompt": "x", "params": "wide"}, "'params' must be a mapping"),
        ({"prompt": "x", "params": {"frames": 16385}}, "frames must be 4n+1 between 1 and 16384"),
        ({"prompt": "x", "params": {"width": 16384, "height": 16384}}, "RP_MAX_PIXELS"),
        ({"prompt": "x", "params": {"steps": 10000}}, "RP_MAX_STEPS"),
    ],
)
def test_bad_launch_config_fails_before_any_pod_with_one_line(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    spec: dict[str, Any],
    needle: str,
) -> None:
    key = "ui/bad request ü"  # a partition key as the UI allows it
    instance.add_dynamic_partitions("video_requests", [key])
    pods_before = len(devstack.emulator.pods())
    config = {"requests": {key: spec}}
    result = materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=instance,
        resources=resources,
        partition_key=key,
        run_config={"ops": {"generated_video": {"ops": {"validate_requests": {"config": config}}}}},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("validate_requests")
    error = failure.event_specific_data.error
    assert error.cls_name == "Failure"  # a user-facing Failure, not a crash
    assert "no pod was launched" in error.message and needle in error.message
    assert f"{key}: " in error.message
    assert "\n" not in error.message.strip()
    assert len(devstack.emulator.pods()) == pods_before
    assert instance.get_latest_materialization_event(AssetKey("generated_video")) is None


def test_request_keys_ignore_nothing_that_changes_the_video() -> None:
    a = VideoRequest.from_dict(GOOD)
    assert a.key != VideoRequest.from_dict({**GOOD, "params": {**SMALL, "steps": 4}}).key
