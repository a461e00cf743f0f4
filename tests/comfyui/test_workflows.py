"""Parameter validation and rendering of the shipped workflows (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rp_pipeline.workflows import (
    WorkflowError,
    WorkflowParamError,
    get_workflow,
    list_workflows,
    load_custom_workflow,
    render_workflow,
    validate_params,
    workflow_hash,
)
from rp_pipeline.workflows.bounds import Bounds

NAMES = ["wan22_i2v_14b_lightx2v", "wan22_t2v_14b", "wan22_ti2v_5b"]


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
        "unknown parameter 'colour'",
        "'input_image' is not used by workflow 'wan22_t2v_14b'",
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
        "input_image is required: workflow 'wan22_i2v_14b_lightx2v' needs an input image "
        "(uploaded file name)"
    ]


def test_missing_prompt_and_wrong_types() -> None:
    found = problems("wan22_ti2v_5b", {"frames": 17.0, "seed": True, "width": 176})
    assert any("prompt is required" in p for p in found)
    assert any("frames must be an integer, got float" in p for p in found)
    assert any("seed must be an integer" in p for p in found)
    assert any("width must be a multiple of 32" in p for p in found)


def test_unknown_workflow() -> None:
    with pytest.raises(WorkflowParamError, match="unknown workflow 'nope'"):
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


def test_custom_workflow(tmp_path: Path) -> None:
    api = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 5, "color": 0}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8.0}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": "video/x", "format": "auto", "codec": "auto"}},
    }  # fmt: skip
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(api))
    spec = load_custom_workflow(
        path,
        {"width": "1.width", "height": "1.height", "frames": "1.batch_size", "fps": "2.fps",
         "filename_prefix": "3.filename_prefix"},
        required=[],
    )  # fmt: skip
    assert spec.name == "mine" and "mine" in list_workflows()
    rendered = render_workflow("mine", {"width": 96, "frames": 9, "fps": 24}, request_id="r1")
    assert rendered.api_json["1"]["inputs"]["width"] == 96
    assert rendered.api_json["1"]["inputs"]["batch_size"] == 9
    assert rendered.api_json["3"]["inputs"]["filename_prefix"] == "video/mine/r1"
    assert rendered.output_node_ids == ["3"]
    with pytest.raises(WorkflowParamError, match="'prompt' is not used"):
        validate_params("mine", {"prompt": "x"})


def test_custom_workflow_errors(tmp_path: Path) -> None:
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": []}))
    with pytest.raises(WorkflowError, match="UI-format"):
        load_custom_workflow(ui, {})
    api = tmp_path / "api.json"
    api.write_text(
        json.dumps({"1": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "x"}}})
    )
    with pytest.raises(WorkflowError, match="node 9 is not in the workflow"):
        load_custom_workflow(api, {"prompt": "9.text"})
    with pytest.raises(WorkflowError, match="has no input 'text'"):
        load_custom_workflow(api, {"prompt": "1.text"})
    with pytest.raises(WorkflowError, match="unknown parameter 'style'"):
        load_custom_workflow(api, {"style": "1.filename_prefix"})


def test_request_without_negative_prompt_fits_a_workflow_without_one(tmp_path: Path) -> None:
    """A request sends only the parameters it sets: an unset negative prompt must not trip a
    custom workflow that has no negative-prompt input (found against real ComfyUI)."""
    from rp_pipeline.video_requests.model import VideoRequest

    api = {
        "1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 0]}},
        "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 5, "color": 0}},
        "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8.0}},
        "5": {"class_type": "SaveVideo", "inputs": {"video": ["4", 0], "filename_prefix": "video/x", "format": "auto", "codec": "auto"}},
    }  # fmt: skip
    path = tmp_path / "no_negative.json"
    path.write_text(json.dumps(api))
    load_custom_workflow(path, {"prompt": "2.text"})

    request = VideoRequest(prompt="a fox", workflow="no_negative")
    assert "negative_prompt" not in request.workflow_params()
    validate_params(request.workflow, request.workflow_params())
    rendered = render_workflow(request.workflow, request.workflow_params())
    assert rendered.api_json["2"]["inputs"]["text"] == "a fox"

    # A negative prompt the workflow cannot take is still refused, with a clear reason.
    with_negative = VideoRequest(prompt="a fox", workflow="no_negative", negative_prompt="blurry")
    with pytest.raises(WorkflowParamError, match="'negative_prompt' is not used"):
        validate_params(with_negative.workflow, with_negative.workflow_params())


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
