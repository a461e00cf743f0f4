"""The shipped API workflows against the official UI templates (`comfyui-workflow-templates`).

The templates are UI format with subgraphs, primitive nodes and switches ("enable the 4-step
LoRA?"). This test resolves the widget values a given switch setting produces and compares node
types, model files, sampler settings, shift, sizes, frames and fps with our API JSON.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest

from rp_pipeline.workflows import get_workflow

# Widget order of the node types we compare (ComfyUI's UI serialises widgets positionally;
# seeds carry an extra "control after generate" widget).
WIDGETS = {
    "UNETLoader": ["unet_name", "weight_dtype"],
    "CLIPLoader": ["clip_name", "type", "device"],
    "VAELoader": ["vae_name"],
    "LoraLoaderModelOnly": ["lora_name", "strength_model"],
    "ModelSamplingSD3": ["shift"],
    "EmptyHunyuanLatentVideo": ["width", "height", "length", "batch_size"],
    "WanImageToVideo": ["width", "height", "length", "batch_size"],
    "Wan22ImageToVideoLatent": ["width", "height", "length", "batch_size"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "KSamplerAdvanced": [
        "add_noise", "noise_seed", "control", "steps", "cfg", "sampler_name", "scheduler",
        "start_at_step", "end_at_step", "return_with_leftover_noise",
    ],
    "KSampler": ["seed", "control", "steps", "cfg", "sampler_name", "scheduler", "denoise"],
    "CLIPTextEncode": ["text"],
}  # fmt: skip
HELPERS = {
    "MarkdownNote",
    "Note",
    "PrimitiveInt",
    "PrimitiveFloat",
    "PrimitiveBoolean",
    "ComfySwitchNode",
    "ComfyMathExpression",
}


def templates_dir() -> Path:
    spec = importlib.util.find_spec("comfyui_workflow_templates_json")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("comfyui-workflow-templates is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "templates"


class UIGraph:
    """One (sub)graph of a UI-format workflow with links resolved to values."""

    def __init__(self, graph: dict[str, Any], switch_on: bool) -> None:
        self.nodes = {n["id"]: n for n in graph["nodes"]}
        self.links: dict[int, tuple[int, int]] = {}
        for link in graph["links"]:
            if isinstance(link, dict):
                self.links[link["id"]] = (link["origin_id"], link["origin_slot"])
            else:
                self.links[link[0]] = (link[1], link[2])
        self.switch_on = switch_on

    def value(self, node: dict[str, Any], name: str) -> Any:
        for inp in node.get("inputs", []):
            if inp["name"] == name and inp.get("link") is not None:
                origin = self.links[inp["link"]]
                if origin[0] >= 0:  # negative ids are the subgraph's own input node
                    return self.output(origin[0], origin[1])
        widgets = WIDGETS[node["type"]]
        return node["widgets_values"][widgets.index(name)]

    def output(self, node_id: int, slot: int) -> Any:
        node = self.nodes[node_id]
        kind = node["type"]
        if kind.startswith("Primitive"):
            return node["widgets_values"][0]
        if kind == "ComfySwitchNode":
            branch = "on_true" if self.switch_on else "on_false"
            link = next(i["link"] for i in node["inputs"] if i["name"] == branch)
            return self.output(*self.links[link])
        if kind == "ComfyMathExpression":
            values = {}
            for inp in node["inputs"]:
                if inp.get("link") is not None:
                    values[inp["name"].split(".")[-1]] = self.output(*self.links[inp["link"]])
            expr = node["widgets_values"][0].replace("floor", "math.floor")
            return int(eval(expr, {"math": math}, values))  # template-provided arithmetic
        return ("node", node_id, slot)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return sorted((n for n in self.nodes.values() if n["type"] == kind), key=lambda n: n["id"])


def load_template(name: str, switch_on: bool) -> tuple[UIGraph, list[str]]:
    """The graph holding the real nodes (the subgraph when there is one) and all node types."""
    data = json.loads((templates_dir() / f"{name}.json").read_text())
    subgraphs = data.get("definitions", {}).get("subgraphs", [])
    graph = UIGraph(subgraphs[0] if subgraphs else data, switch_on)
    types = [n["type"] for n in data["nodes"]] + [
        n["type"] for sg in subgraphs for n in sg["nodes"]
    ]
    top = UIGraph(data, switch_on)
    # Nodes outside the subgraph (SaveVideo, LoadImage) are real too.
    for node in top.nodes.values():
        if node["type"] in WIDGETS or node["type"] == "LoadImage":
            graph.nodes.setdefault(node["id"], node)
    real_types = [t for t in types if t not in HELPERS and "-" not in t]  # drop subgraph uuids
    return graph, real_types


def api_nodes(api: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        n["inputs"]
        for _, n in sorted(api.items(), key=lambda kv: int(kv[0]))
        if n["class_type"] == kind
    ]


CASES = [
    # (our workflow, template, LoRA switch, bypassed template node types we leave out)
    ("wan22_t2v_14b", "video_wan2_2_14B_t2v", False, {"LoraLoaderModelOnly"}),
    ("wan22_i2v_14b_lightx2v", "video_wan2_2_14B_i2v", True, set()),
    ("wan22_ti2v_5b", "video_wan2_2_5B_ti2v", False, {"LoadImage"}),
]


@pytest.mark.parametrize(("ours", "template", "switch_on", "left_out"), CASES)
def test_node_types_match(ours: str, template: str, switch_on: bool, left_out: set[str]) -> None:
    _, template_types = load_template(template, switch_on)
    api = get_workflow(ours).api_json
    assert sorted(n["class_type"] for n in api.values()) == sorted(
        t for t in template_types if t not in left_out
    )


@pytest.mark.parametrize(("ours", "template", "switch_on", "left_out"), CASES)
def test_models_and_sampler_settings_match(
    ours: str, template: str, switch_on: bool, left_out: set[str]
) -> None:
    graph, _ = load_template(template, switch_on)
    api = get_workflow(ours).api_json

    def template_values(kind: str, names: list[str]) -> list[tuple[Any, ...]]:
        return sorted(tuple(graph.value(n, k) for k in names) for n in graph.of_type(kind))

    def our_values(kind: str, names: list[str]) -> list[tuple[Any, ...]]:
        return sorted(tuple(n[k] for k in names) for n in api_nodes(api, kind))

    checks = {
        "UNETLoader": ["unet_name", "weight_dtype"],
        "CLIPLoader": ["clip_name", "type", "device"],
        "VAELoader": ["vae_name"],
        "ModelSamplingSD3": ["shift"],
        "CreateVideo": ["fps"],
        "SaveVideo": ["format", "codec"],
        "KSamplerAdvanced": [
            "add_noise", "steps", "cfg", "sampler_name", "scheduler", "start_at_step",
            "end_at_step", "return_with_leftover_noise",
        ],
        "KSampler": ["steps", "cfg", "sampler_name", "scheduler", "denoise"],
    }  # fmt: skip
    if "LoraLoaderModelOnly" not in left_out:
        checks["LoraLoaderModelOnly"] = ["lora_name", "strength_model"]
    for kind, names in checks.items():
        want = template_values(kind, names)
        got = our_values(kind, names)
        assert _rounded(got) == _rounded(want), kind


def _rounded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    # The UI stores 5.000000000000001 for 5; compare numbers, not float noise.
    return [tuple(round(v, 6) if isinstance(v, int | float) else v for v in row) for row in rows]


def test_i2v_is_the_four_step_lora_variant() -> None:
    api = get_workflow("wan22_i2v_14b_lightx2v").api_json
    samplers = api_nodes(api, "KSamplerAdvanced")
    assert {s["steps"] for s in samplers} == {4}
    assert {s["cfg"] for s in samplers} == {1.0}
    loras = [n["lora_name"] for n in api_nodes(api, "LoraLoaderModelOnly")]
    assert all("lightx2v_4steps" in name for name in loras) and len(loras) == 2


@pytest.mark.parametrize(
    ("ours", "template", "switch_on", "latent"),
    [
        ("wan22_i2v_14b_lightx2v", "video_wan2_2_14B_i2v", True, "WanImageToVideo"),
        ("wan22_ti2v_5b", "video_wan2_2_5B_ti2v", False, "Wan22ImageToVideoLatent"),
    ],
)
def test_sizes_and_frames_match(ours: str, template: str, switch_on: bool, latent: str) -> None:
    graph, _ = load_template(template, switch_on)
    want = [
        tuple(graph.value(n, k) for k in ("width", "height", "length"))
        for n in graph.of_type(latent)
    ]
    got = [
        tuple(n[k] for k in ("width", "height", "length"))
        for n in api_nodes(get_workflow(ours).api_json, latent)
    ]
    assert got == want


def test_t2v_is_the_720p_variant() -> None:
    """T2V 14B ships at 720p, 1280x704x121 @ 16 fps (the template's default is 640x640)."""
    api = get_workflow("wan22_t2v_14b").api_json
    latent = api_nodes(api, "EmptyHunyuanLatentVideo")[0]
    assert (latent["width"], latent["height"], latent["length"]) == (1280, 704, 121)
    assert api_nodes(api, "CreateVideo")[0]["fps"] == 16.0
