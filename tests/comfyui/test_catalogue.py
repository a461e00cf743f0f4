"""The stand-in's node catalogue: every core node of ComfyUI 0.3.64, extensible by `/object_info`
snapshots of a ComfyUI with custom nodes, whose nodes then validate and run (generically) too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.comfyui_standin.catalogue import CATALOGUE_ENV, CatalogueError

from .helpers import history_entry, mp4_facts
from .test_contract import FIXTURES

# Two custom nodes as a ComfyUI with them installed lists them on /object_info: one patches a
# MODEL (like a speed-up node), one filters frames (like a colour grader).
CUSTOM_NODES: dict[str, Any] = {
    "ModelSpeedPatch": {
        "input": {"required": {"model": ["MODEL", {}], "ratio": ["FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}]}},
        "input_order": {"required": ["model", "ratio"]},
        "output": ["MODEL"], "output_is_list": [False], "output_name": ["MODEL"],
        "name": "ModelSpeedPatch", "display_name": "Model Speed Patch", "description": "",
        "python_module": "custom_nodes.speed", "category": "model_patches", "output_node": False,
    },
    "ColorGrade": {
        "input": {
            "required": {"images": ["IMAGE", {}], "look": [["warm", "cold"], {}]},
            "optional": {"strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}]},
        },
        "input_order": {"required": ["images", "look"], "optional": ["strength"]},
        "output": ["IMAGE", "STRING"], "output_is_list": [False, False],
        "output_name": ["IMAGE", "summary"], "name": "ColorGrade", "display_name": "Color Grade",
        "description": "", "python_module": "custom_nodes.grade", "category": "image",
        "output_node": False,
    },
}  # fmt: skip


def video_graph(look: str = "warm", ratio: float = 0.5) -> dict[str, Any]:
    """The shipped text-to-video graph's shape with a LoRA, both custom nodes and small sizes."""
    return {
        "71": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}},
        "73": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
        "75": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "weight_dtype": "default"}},
        "76": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["75", 0], "lora_name": "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors", "strength_model": 1.0}},
        "77": {"class_type": "ModelSpeedPatch", "inputs": {"model": ["76", 0], "ratio": ratio}},
        "82": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["77", 0], "shift": 5.0}},
        "89": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["71", 0]}},
        "72": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["71", 0]}},
        "74": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 96, "height": 64, "length": 9, "batch_size": 1}},
        "81": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["82", 0], "add_noise": "enable", "noise_seed": 3, "steps": 4, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "positive": ["89", 0], "negative": ["72", 0], "latent_image": ["74", 0], "start_at_step": 0, "end_at_step": 4, "return_with_leftover_noise": "disable"}},
        "87": {"class_type": "VAEDecode", "inputs": {"samples": ["81", 0], "vae": ["73", 0]}},
        "90": {"class_type": "ColorGrade", "inputs": {"images": ["87", 0], "look": look}},
        "88": {"class_type": "CreateVideo", "inputs": {"images": ["90", 0], "fps": 16.0}},
        "80": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "video/custom", "format": "auto", "codec": "auto", "video": ["88", 0]}},
    }  # fmt: skip


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "object_info_custom.json"
    path.write_text(json.dumps(CUSTOM_NODES))
    return path


@pytest.fixture
def extended(tmp_path: Path, snapshot: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A stand-in started with the snapshot named by the environment, as a pod would be."""
    monkeypatch.setenv(CATALOGUE_ENV, str(snapshot))
    standin = ComfyStandin(tmp_path / "output", step_seconds=0.001)
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


@pytest.mark.skipif(not (FIXTURES / "INDEX.json").is_file(), reason="recordings not found")
def test_every_core_node_is_in_the_catalogue(standin: ComfyStandin) -> None:
    real = json.loads((FIXTURES / "object_info_full.body.json").read_text())
    ours = requests.get(standin.base_url + "/object_info", timeout=10).json()
    assert set(real) <= set(ours)
    assert set(ours) - set(real) == {"VHS_VideoCombine"}  # the stand-in's one custom node


def test_a_core_node_without_a_handler_validates_and_runs(standin: ComfyStandin) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 24, "batch_size": 3, "color": 0}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "ImageFlip", "inputs": {"image": ["2", 0], "flip_method": "x-axis: vertically"}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "core"}},
    }  # fmt: skip
    queued = requests.post(standin.base_url + "/prompt", json={"prompt": graph}, timeout=10)
    assert queued.status_code == 200, queued.text
    entry = history_entry(standin.base_url, queued.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert [i["filename"] for i in entry["outputs"]["4"]["images"]] == [
        "core_00001_.png",
        "core_00002_.png",
        "core_00003_.png",
    ]


def test_custom_nodes_are_unknown_without_the_snapshot(standin: ComfyStandin) -> None:
    answer = requests.post(standin.base_url + "/prompt", json={"prompt": video_graph()}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "Cannot execute because node ModelSpeedPatch does not exist."
    )


def test_snapshot_nodes_are_listed_and_a_video_workflow_with_them_renders(extended: Any) -> None:
    base = extended.base_url
    listed = requests.get(base + "/object_info/ColorGrade", timeout=10).json()
    assert listed == {"ColorGrade": CUSTOM_NODES["ColorGrade"]}
    assert "KSamplerAdvanced" in requests.get(base + "/object_info", timeout=10).json()

    queued = requests.post(base + "/prompt", json={"prompt": video_graph()}, timeout=10)
    assert queued.status_code == 200, queued.text
    entry = history_entry(base, queued.json()["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["80"]["images"] == [
        {"filename": "custom_00001_.mp4", "subfolder": "video", "type": "output"}
    ]
    # The frames went through both custom nodes and the LoRA: the latent's size and length.
    facts = mp4_facts(extended.output_dir / "video" / "custom_00001_.mp4")
    assert (facts["codec"], facts["width"], facts["height"], facts["frames"]) == ("h264", 96, 64, 9)


@pytest.mark.parametrize(
    ("graph", "error_type", "node"),
    [
        (video_graph(look="sepia"), "value_not_in_list", "90"),
        (video_graph(ratio=1.5), "value_bigger_than_max", "77"),
    ],
)
def test_snapshot_nodes_are_validated_like_core_ones(
    extended: Any, graph: dict[str, Any], error_type: str, node: str
) -> None:
    answer = requests.post(extended.base_url + "/prompt", json={"prompt": graph}, timeout=10)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert [e["type"] for e in body["node_errors"][node]["errors"]] == [error_type]


def test_lora_loader_needs_an_installed_lora(tmp_path: Path) -> None:
    standin = ComfyStandin(tmp_path / "output", models={"loras": []})
    standin.start()
    try:
        graph = video_graph()
        del graph["77"]
        graph["82"]["inputs"]["model"] = ["76", 0]
        del graph["90"]
        graph["88"]["inputs"]["images"] = ["87", 0]
        answer = requests.post(standin.base_url + "/prompt", json={"prompt": graph}, timeout=10)
    finally:
        standin.stop()
    assert answer.status_code == 400
    errors = answer.json()["node_errors"]
    assert [e["type"] for e in errors["76"]["errors"]] == ["value_not_in_list"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "an object of nodes"),
        (json.dumps({"Broken": {"input": {}}}), "node 'Broken' lacks output, name"),
    ],
)
def test_a_bad_snapshot_is_refused_with_its_reason(
    tmp_path: Path, content: str, reason: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(CatalogueError, match=reason):
        ComfyStandin(tmp_path / "output", catalogues=[bad])
    result = subprocess.run(
        [sys.executable, "-m", "rp_devstack.comfyui_standin", "--output-dir", str(tmp_path / "o"),
         "--port", "0", "--catalogue", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and reason in result.stderr
    assert "Traceback" not in result.stderr
