"""Parameter validation and rendering of the shipped workflows (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rp_pipeline.workflows import (
    WorkflowParamError,
    get_workflow,
    list_workflows,
    render_workflow,
    validate_params,
    workflow_hash,
)
from rp_pipeline.workflows.bounds import Bounds

NAMES = ["wan22_i2v_14b_lightx2v", "wan22_t2v_14b", "wan22_ti2v_5b"]
ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "workflows" / "catalogue"


def problems(name: str, params: dict) -> list[str]:
    with pytest.raises(WorkflowParamError) as info:
        validate_params(name, params)
    return info.value.problems


def test_shipped_workflows_are_listed() -> None:
    assert [n for n in list_workflows() if n in NAMES] == NAMES


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        "wan22_t2v_14b",
        {
            "prompt": "  ",
            "frames": 80,
            "width": 1000,
            "height": "704",
            "fps": 0,
            "steps": 1,
            "cfg": "high",
            "seed": -1,
            "colour": "red",
            "input_image": "x.png",
            "filename_prefix": "../escape",
        },
    )
    text = "\n".join(found)
    for needle in (
        "unknown parameter 'colour' for workflow 'wan22_t2v_14b' (known: cfg, filename_prefix, "
        "fps, frames, height, negative_prompt, prompt, seed, steps, width)",
        "unknown parameter 'input_image'",
        "prompt must not be empty",
        "frames must be 4n+1",
        "width must be a multiple of 16",
        "height must be an integer, got str",
        "fps must be a number between 1 and 120",
        "steps must be an integer between 2 and 100",
        "cfg must be a number",
        "seed must be an integer",
        "filename_prefix",
    ):
        assert needle in text, needle
    assert len(found) == 11


def test_i2v_needs_an_input_image() -> None:
    assert problems("wan22_i2v_14b_lightx2v", {"prompt": "a fox"}) == [
        "input_image is required: workflow 'wan22_i2v_14b_lightx2v' needs a start image"
    ]


def test_missing_prompt_and_wrong_types() -> None:
    found = problems("wan22_ti2v_5b", {"frames": 17.0, "seed": True, "width": 176})
    assert any("prompt is required" in p for p in found)
    assert any("frames must be an integer, got float" in p for p in found)
    assert any("seed must be an integer" in p for p in found)
    assert any("width must be a multiple of 32" in p for p in found)


def test_unknown_workflow() -> None:
    with pytest.raises(WorkflowParamError, match="unknown workflow 'nope'; known: wan22_i2v"):
        validate_params("nope", {"prompt": "x"})


def test_render_injects_by_role() -> None:
    rendered = render_workflow(
        "wan22_t2v_14b",
        {
            "prompt": "a fox",
            "negative_prompt": "blurry",
            "seed": 42,
            "width": 640,
            "height": 352,
            "frames": 33,
            "fps": 12,
            "steps": 8,
            "cfg": 4,
            "filename_prefix": "video/run-7",
        },
    )
    api = rendered.api_json
    assert api["89"]["inputs"]["text"] == "a fox"
    assert api["72"]["inputs"]["text"] == "blurry"
    assert api["81"]["inputs"]["noise_seed"] == 42 and rendered.seed == 42
    assert api["78"]["inputs"]["noise_seed"] == 0  # the low-noise pass adds no noise
    assert (api["74"]["inputs"]["width"], api["74"]["inputs"]["height"]) == (640, 352)
    assert api["74"]["inputs"]["length"] == 33
    assert api["88"]["inputs"]["fps"] == 12.0 and isinstance(api["88"]["inputs"]["fps"], float)
    assert [api[n]["inputs"]["steps"] for n in ("81", "78")] == [8, 8]
    assert api["81"]["inputs"]["end_at_step"] == 4 and api["78"]["inputs"]["start_at_step"] == 4
    assert api["78"]["inputs"]["end_at_step"] == 8
    assert [api[n]["inputs"]["cfg"] for n in ("81", "78")] == [4.0, 4.0]
    assert api["80"]["inputs"]["filename_prefix"] == "video/run-7"
    assert rendered.output_node_ids == ["80"]
    assert rendered.params["seed"] == 42 and rendered.params["frames"] == 33
    # The template itself is untouched and its hash is stable.
    template = get_workflow("wan22_t2v_14b").api_json
    assert template["89"]["inputs"]["text"] != "a fox"
    assert rendered.workflow_hash == workflow_hash(template)
    assert len(rendered.workflow_hash) == 64


def test_random_seed_is_recorded_and_prefix_unique() -> None:
    first = render_workflow("wan22_ti2v_5b", {"prompt": "x", "seed": None})
    second = render_workflow("wan22_ti2v_5b", {"prompt": "x"})
    assert first.seed != second.seed  # 50 random bits: a collision would be a bug
    assert first.api_json["3"]["inputs"]["seed"] == first.seed == first.params["seed"]
    assert first.filename_prefix != second.filename_prefix
    by_request = render_workflow("wan22_ti2v_5b", {"prompt": "x"}, request_id="req/42")
    assert by_request.filename_prefix == "video/wan22_ti2v_5b/req~2F42"  # "/" escaped
    assert by_request.api_json["58"]["inputs"]["filename_prefix"] == by_request.filename_prefix


def test_empty_negative_prompt_keeps_the_template_one() -> None:
    template_negative = get_workflow("wan22_t2v_14b").api_json["72"]["inputs"]["text"]
    for value in ("", "  ", None):
        rendered = render_workflow("wan22_t2v_14b", {"prompt": "x", "negative_prompt": value})
        assert rendered.api_json["72"]["inputs"]["text"] == template_negative
        assert rendered.params["negative_prompt"] == template_negative


def test_ti2v_start_image_is_optional() -> None:
    plain = render_workflow("wan22_ti2v_5b", {"prompt": "x"}).api_json
    assert "56" not in plain and "start_image" not in plain["55"]["inputs"]
    with_image = render_workflow("wan22_ti2v_5b", {"prompt": "x", "input_image": "a.png"}).api_json
    assert with_image["56"]["class_type"] == "LoadImage"
    assert with_image["56"]["inputs"]["image"] == "a.png"
    assert with_image["55"]["inputs"]["start_image"] == ["56", 0]


def use_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Any]) -> Path:
    """A workflows folder of `files` (dicts are written as JSON, strings as they are), checked
    against the project's node catalogue."""
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / name).write_text(text)
    monkeypatch.setenv("RP_WORKFLOWS_DIR", str(tmp_path))
    monkeypatch.setenv("RP_NODE_CATALOGUE_DIR", str(CATALOGUE))
    return tmp_path


IMAGES_TO_VIDEO = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 5, "color": 0}, "_meta": {"title": "Frames $width $height $frames:batch_size"}},
    "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}, "_meta": {"title": "Create Video $fps"}},
    "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/x", "format": "auto", "codec": "auto"}, "_meta": {"title": "Save Video"}},
}  # fmt: skip


def test_a_workflow_with_parameters_in_its_node_titles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_folder(tmp_path, monkeypatch, {"mine.json": IMAGES_TO_VIDEO})
    assert list_workflows() == ["mine"]
    spec = get_workflow("mine")
    assert sorted(spec.params) == ["filename_prefix", "fps", "frames", "height", "width"]
    assert spec.params["frames"].targets == (("1", "batch_size"),)
    assert spec.params["fps"].type == "float" and spec.params["width"].type == "int"
    rendered = render_workflow("mine", {"width": 96, "frames": 9, "fps": 24}, request_id="r1")
    assert rendered.api_json["1"]["inputs"]["width"] == 96
    assert rendered.api_json["1"]["inputs"]["batch_size"] == 9
    # the output node's prefix is filled per request without being marked
    assert rendered.api_json["3"]["inputs"]["filename_prefix"] == "video/mine/r1"
    assert rendered.output_node_ids == ["3"]
    with pytest.raises(WorkflowParamError, match="unknown parameter 'prompt' for workflow 'mine'"):
        validate_params("mine", {"prompt": "x"})
    # ComfyUI's own bounds of the marked input apply (EmptyImage width: 1..16384)
    assert "width must be an integer between 1 and 16384" in problems("mine", {"width": 0})[0]


def test_a_map_file_names_types_bounds_and_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = json.loads((ROOT / "workflows" / "wan22_ti2v_5b.json").read_text())
    params = """
description: mine
parameters:
  text:    {to: "6.text", type: text, required: true}
  seed:    {to: ["3.seed"], type: int, default: 0, min: 0}
  steps:   {to: ["3.steps"], type: int, default: 20, min: 1, max: 30}
  sampler: {to: ["3.sampler_name"], type: choice, choices: [euler, uni_pc]}
  scheduler: {to: ["3.scheduler"]}
"""
    use_folder(tmp_path, monkeypatch, {"mine.json": api, "mine.params.yaml": params})
    spec = get_workflow("mine")
    assert spec.params["scheduler"].type == "choice"  # from the catalogue's combo input
    assert spec.required == ["text"]
    validate_params("mine", {"text": "a fox", "steps": 30, "sampler": "euler"})
    found = problems("mine", {"text": "", "steps": 31, "sampler": "dpm", "scheduler": "nope"})
    assert found[0] == "text must not be empty"
    assert "steps must be an integer between 1 and 30, got 31" in found[1]
    assert found[2] == "sampler must be one of euler, uni_pc, got 'dpm'"
    assert found[3].startswith("scheduler must be one of simple, sgm_uniform, karras")
    rendered = render_workflow("mine", {"text": "a fox", "sampler": "euler"})
    assert rendered.api_json["6"]["inputs"]["text"] == "a fox"
    assert rendered.api_json["3"]["inputs"]["sampler_name"] == "euler"


def test_map_and_title_mistakes_are_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = json.loads((ROOT / "workflows" / "wan22_ti2v_5b.json").read_text())
    params = """
parameters:
  prompt: {to: ["99.text"]}
  negative: {to: ["7.txt"]}
  latent: {to: ["8.samples"]}
  steps: {to: ["3.steps"], type: number}
  seed: {to: "3.seed", colour: red}
"""
    titled = {**IMAGES_TO_VIDEO, "2": {**IMAGES_TO_VIDEO["2"], "_meta": {"title": "$speed"}}}
    start = {**api, "56": {"class_type": "LoadImage", "inputs": {"image": "a.png"}, "_meta": {"title": "$start:image"}}}  # fmt: skip
    ui = {"nodes": [], "links": []}
    use_folder(
        tmp_path,
        monkeypatch,
        {
            "mine.json": api,
            "mine.params.yaml": params,
            "titled.json": titled,
            "ui.json": ui,
            "start.json": start,
        },
    )
    with pytest.raises(WorkflowParamError) as info:
        get_workflow("mine")
    assert info.value.problems == [
        "parameter 'prompt': node 99 is not in the workflow",
        "parameter 'negative': node 7 (CLIPTextEncode) has no input 'txt'",
        "parameter 'latent': 8.samples is linked from node 3; map a value input, not a link",
        "parameter 'steps': type 'number' is not one of text, int, float, bool, choice, image",
        "parameter 'seed': unknown key(s) colour (known: attach, choices, default, description, "
        "half_to, max, min, required, to, type)",
    ]
    assert str(info.value).startswith("workflow 'mine' is refused: parameter 'prompt'")
    with pytest.raises(WorkflowParamError, match=r"node 2 \(CreateVideo\) has no input 'speed'; "):
        get_workflow("titled")
    with pytest.raises(WorkflowParamError, match="UI-format workflow: export it from ComfyUI"):
        get_workflow("ui")
    with pytest.raises(WorkflowParamError, match="'start': an image parameter is the request's"):
        get_workflow("start")


def test_bounds_are_comfyuis_own_from_the_node_catalogue() -> None:
    from rp_pipeline.workflows.bounds import input_bounds, object_info

    latent = object_info()["EmptyHunyuanLatentVideo"]["input"]["required"]["length"][1]
    assert input_bounds("EmptyHunyuanLatentVideo", "length") == Bounds("INT", 1, latent["max"], 4)
    assert input_bounds("KSampler", "seed") == Bounds("INT", 0, 2**64 - 1, 1)
    assert input_bounds("KSamplerAdvanced", "steps") == Bounds("INT", 1, 10000, 1)
    assert input_bounds("CLIPTextEncode", "text") is None  # not a number
    assert input_bounds("NoSuchNode", "width") is None


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"frames": 16385}, "frames must be 4n+1 between 1 and 16384, got 16385"),
        ({"frames": 80}, "frames must be 4n+1 between 1 and 16384, got 80"),
        ({"width": 16400}, "width must be a multiple of 16 between 16 and 16384, got 16400"),
        ({"width": 16384, "height": 16384}, "over the budget of"),
        ({"steps": 10000}, "steps must be an integer between 2 and 100, got 10000 (RP_MAX_STEPS)"),
        ({"cfg": 100.5}, "cfg must be a number between 0 and 100, got 100.5"),
        ({"seed": 2**64}, "seed must be an integer in 0..18446744073709551615"),
        ({"seed": "abc"}, "seed must be an integer in 0..18446744073709551615 or null"),
        ({"seed": 1.5}, "got 1.5"),
    ],
)
def test_values_comfyui_or_the_budget_refuses_are_one_line_each(params: dict, needle: str) -> None:
    with pytest.raises(WorkflowParamError) as info:
        validate_params("wan22_t2v_14b", {"prompt": "a fox", **params})
    assert len(info.value.problems) == 1
    assert needle in info.value.problems[0]
    assert "\n" not in str(info.value)


def test_the_5b_latent_steps_sizes_by_32_and_budgets_follow_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "a multiple of 32" in problems("wan22_ti2v_5b", {"prompt": "x", "width": 720})[0]
    validate_params("wan22_ti2v_5b", {"prompt": "x", "width": 1280, "height": 704, "frames": 121})
    monkeypatch.setenv("RP_MAX_PIXELS", str(640 * 352 * 33))
    monkeypatch.setenv("RP_MAX_STEPS", "8")
    validate_params("wan22_ti2v_5b", {"prompt": "x", "width": 640, "height": 352, "frames": 33})
    # the template's own 1280x704x121 counts when width/height/frames are not given
    assert "RP_MAX_PIXELS" in problems("wan22_ti2v_5b", {"prompt": "x"})[0]
    found = problems(
        "wan22_ti2v_5b", {"prompt": "x", "width": 640, "height": 352, "frames": 33, "steps": 9}
    )
    assert found == ["steps must be an integer between 1 and 8, got 9 (RP_MAX_STEPS)"]
