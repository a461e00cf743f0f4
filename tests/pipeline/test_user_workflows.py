"""A user's own ComfyUI workflow, dropped in the workflows folder with its parameter map: one
that uses a custom node (VideoHelperSuite's Video Combine) renders on the devstack from a
request; the same workflow broken in one way (an unknown node class, a wrong input type, an
out-of-range value, a model file the image does not download) is refused in the run's first op
with one line naming the node, input or file, and RunPod is never called."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance

from rp_devstack.stack import Devstack
from rp_pipeline.video_requests.model import VideoRequest
from tests.pipeline.helpers import (
    generate,
    latest_by_partition,
    pods_of_run,
    r2_now,
    register_requests,
    run_messages,
    with_settings,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("workflows")
NAME = "wan22_5b_vhs"
CORE_SNAPSHOT = ROOT / "workflows" / "catalogue" / "core.json"
# VideoHelperSuite's Video Combine as its /object_info shows it (written from the package's
# source at commit 4ee72c06): the snapshot an image that installs the package would carry.
VHS_SNAPSHOT = FIXTURE / "catalogue" / "ComfyUI-VideoHelperSuite.json"
SMALL = {"width": 320, "height": 192, "frames": 9, "fps": 8, "sampler": "euler"}


@pytest.fixture
def workflows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's workflows folder holding their workflow and its map, and their node catalogue:
    ComfyUI's core nodes plus the snapshot of the custom node package their image installs."""
    directory = tmp_path / "my-workflows"
    (directory / "catalogue").mkdir(parents=True)
    for path in FIXTURE.glob(f"{NAME}.*"):
        shutil.copy(path, directory / path.name)
    for snapshot in (CORE_SNAPSHOT, VHS_SNAPSHOT):
        shutil.copy(snapshot, directory / "catalogue" / snapshot.name)
    monkeypatch.setenv("RP_WORKFLOWS_DIR", str(directory))
    monkeypatch.delenv("RP_NODE_CATALOGUE_DIR", raising=False)  # the folder's own catalogue/
    return directory


def write_request(prompts_dir: Path, prompt: str) -> str:
    entry = {"workflow": NAME, "prompt": prompt, "seed": 7, "params": SMALL}
    (prompts_dir / "mine.yaml").write_text(yaml.safe_dump({"requests": [entry]}))
    return VideoRequest.from_dict(entry).key


def test_a_custom_node_workflow_renders_from_a_request(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    workflows_dir: Path,
) -> None:
    key = write_request(prompts_dir, "a paper lantern drifting over a dark lake")
    register_requests(instance, resources)
    # The pod's ComfyUI has the package installed: the stand-in serves its snapshot.
    pod_env = {"COMFYUI_STANDIN_CATALOGUE": str(VHS_SNAPSHOT)}
    result = generate(instance, with_settings(resources, extra_pod_env=pod_env), [key])
    assert result.success
    md = latest_by_partition(instance)[key]
    assert md["workflow"] == NAME
    assert md["seed"] == 7
    assert (md["width"], md["height"], md["frames"]) == (320, 192, 9)
    assert md["r2_key"].endswith(".mp4") and f"/{NAME}/" in md["r2_key"]
    head = r2_now().head(md["r2_key"])
    assert head is not None and head.size == md["size_bytes"]
    [pod] = pods_of_run(devstack.emulator, result.run_id)
    assert pod["desired_status"] == "TERMINATED"


def _unknown_class(api: dict[str, Any]) -> None:
    api["58"]["class_type"] = "VHS_VideoCombineXL"


def _wrong_type(api: dict[str, Any]) -> None:
    api["58"]["inputs"]["loop_count"] = "forever"


def _out_of_range(api: dict[str, Any]) -> None:
    api["58"]["inputs"]["loop_count"] = 500


def _model_not_in_manifest(api: dict[str, Any]) -> None:
    api["37"]["inputs"]["unet_name"] = "wan2.2_ti2v_5B_fp32.safetensors"


BROKEN: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_unknown_class, "node 58: class 'VHS_VideoCombineXL' is not in the node catalogue"),
    (_wrong_type, "node 58 (VHS_VideoCombine) input 'loop_count': 'forever' is not an INT"),
    (_out_of_range, "node 58 (VHS_VideoCombine) input 'loop_count': 500 is bigger than its max of 100"),
    (
        _model_not_in_manifest,
        "node 37 (UNETLoader) input 'unet_name': model file 'wan2.2_ti2v_5B_fp32.safetensors' "
        "is neither in the image's model manifest",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("break_it", "line"), BROKEN, ids=[b.__name__[1:] for b, _ in BROKEN])
def test_a_broken_workflow_is_refused_before_any_runpod_call(
    devstack: Devstack,
    instance: DagsterInstance,
    resources: dict[str, Any],
    prompts_dir: Path,
    workflows_dir: Path,
    break_it: Callable[[dict[str, Any]], None],
    line: str,
) -> None:
    # A prompt of its own: the devstack's R2 outlives a test, and a video already made for the
    # same request needs no pod at all (pay once).
    key = write_request(prompts_dir, f"a paper lantern, {break_it.__name__}")
    register_requests(instance, resources)  # registered while the workflow was sound
    path = workflows_dir / f"{NAME}.json"
    api = json.loads(path.read_text())
    break_it(api)
    path.write_text(json.dumps(api))
    before = devstack.emulator.request_counts()
    result = generate(instance, resources, [key])
    assert not result.success
    assert devstack.emulator.request_counts() == before, "RunPod was called"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key.endswith("validate_requests")
    message = str(failure.event_specific_data.error)
    assert "no pod was launched" in message and line in message
    assert "Traceback" not in message.splitlines()[0]
    logged = [m for m in run_messages(instance, result.run_id) if line in m]
    assert logged and all("\n" not in m for m in logged), "one log line naming the problem"
