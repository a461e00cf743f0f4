"""Requests name a workflow of the folder and pass its own parameters: checked at registration
(one line naming the file, entry and what is wrong, with the workflow's known parameters), the
shipped workflows' request fields unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from rp_pipeline.video_requests.model import RequestError, parse_request, scan_requests
from rp_pipeline.workflows import render_workflow

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("workflows")


@pytest.fixture
def with_vhs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped workflows plus a user's (a custom node's) in one folder, its catalogue the
    core nodes plus the custom node package's snapshot."""
    directory = tmp_path / "workflows"
    (directory / "catalogue").mkdir(parents=True)
    for path in [*(ROOT / "workflows").glob("*.*"), *FIXTURE.glob("wan22_5b_vhs.*")]:
        shutil.copy(path, directory / path.name)
    for snapshot in [ROOT / "workflows" / "catalogue" / "core.json", *FIXTURE.glob("catalogue/*")]:
        shutil.copy(snapshot, directory / "catalogue" / snapshot.name)
    monkeypatch.setenv("RP_WORKFLOWS_DIR", str(directory))
    monkeypatch.delenv("RP_NODE_CATALOGUE_DIR", raising=False)
    return directory


def test_a_request_passes_the_workflows_own_parameters(with_vhs: Path) -> None:
    request = parse_request(
        {"workflow": "wan22_5b_vhs", "prompt": "a kite", "seed": 3,
         "params": {"sampler": "euler", "format": "video/webm", "frames": 17}}
    )  # fmt: skip
    rendered = render_workflow(request.workflow, request.workflow_params(), request_id="r")
    assert rendered.api_json["3"]["inputs"]["sampler_name"] == "euler"
    assert rendered.api_json["58"]["inputs"]["format"] == "video/webm"
    assert rendered.api_json["55"]["inputs"]["length"] == 17
    assert rendered.api_json["58"]["inputs"]["filename_prefix"] == "video/wan22_5b_vhs/r"


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            {"workflow": "wan22_5b_vhs", "prompt": "x", "params": {"colour": "red"}},
            "unknown parameter 'colour' for workflow 'wan22_5b_vhs' (known: filename_prefix, "
            "format, fps, frames, height, prompt, sampler, seed, steps, width)",
        ),
        (
            {"workflow": "wan22_5b_vhs", "prompt": "x", "params": {"sampler": "dpm"}},
            "sampler must be one of euler, uni_pc, got 'dpm'",
        ),
        (
            {"workflow": "wan22_5b_vhs", "prompt": "x", "params": {"steps": 101}},
            "steps must be an integer between 1 and 100, got 101 (RP_MAX_STEPS)",
        ),
        (
            {"workflow": "wan22_5b_vhs", "prompt": "x", "params": {"format": "video/avi"}},
            "format must be one of image/gif, image/webp, video/16bit-png",
        ),
        (
            {"workflow": "wan22_5b_vhs", "prompt": "x", "negative_prompt": "blurry"},
            "unknown parameter 'negative_prompt' for workflow 'wan22_5b_vhs'",
        ),
        ({"workflow": "mine", "prompt": "x"}, "unknown workflow 'mine'; known: wan22_5b_vhs, "),
    ],
)
def test_bad_parameters_are_one_line_at_registration(
    with_vhs: Path, tmp_path: Path, entry: dict, line: str
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "mine.yaml").write_text(yaml.safe_dump({"requests": [entry]}))
    scan = scan_requests(prompts)
    assert scan.requests == {}
    [problem] = scan.problems
    assert problem.startswith(f"{prompts / 'mine.yaml'}: entry 0: ") and line in problem
    assert "\n" not in problem


def test_the_shipped_request_fields_keep_working(with_vhs: Path) -> None:
    request = parse_request(
        {"workflow": "wan22_t2v_14b", "prompt": "a fox", "negative_prompt": "blurry", "seed": 5,
         "params": {"width": 640, "height": 352, "frames": 33, "fps": 16, "steps": 8, "cfg": 4}}
    )  # fmt: skip
    api = render_workflow(request.workflow, request.workflow_params()).api_json
    assert (api["89"]["inputs"]["text"], api["72"]["inputs"]["text"]) == ("a fox", "blurry")
    assert api["81"]["inputs"]["noise_seed"] == 5
    assert api["74"]["inputs"]["length"] == 33 and api["88"]["inputs"]["fps"] == 16.0
    assert api["81"]["inputs"]["end_at_step"] == 4 and api["78"]["inputs"]["start_at_step"] == 4
    with pytest.raises(RequestError, match=r"over the budget of .* \(RP_MAX_PIXELS\)"):
        parse_request({"workflow": "wan22_t2v_14b", "prompt": "x",
                       "params": {"width": 4096, "height": 4096, "frames": 121}})  # fmt: skip


def test_a_broken_workflow_refuses_its_requests_naming_the_node(with_vhs: Path) -> None:
    path = with_vhs / "wan22_5b_vhs.json"
    path.write_text(path.read_text().replace('"VHS_VideoCombine"', '"VHS_VideoCombineXL"'))
    with pytest.raises(RequestError) as info:
        parse_request({"workflow": "wan22_5b_vhs", "prompt": "x"})
    message = str(info.value)
    assert message.startswith("workflow 'wan22_5b_vhs' is refused: node 58: class ")
    assert "'VHS_VideoCombineXL' is not in the node catalogue" in message
