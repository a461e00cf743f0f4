"""The whole-graph check that runs before any pod, against what ComfyUI itself refuses.

Two references: the prompts the real ComfyUI 0.3.64 refused (recorded transcripts), which our
check must refuse naming the same node and input; and the stand-in's validator (a port of
ComfyUI's `validate_inputs`), which must agree with us on every broken variant of a graph."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rp_devstack.comfyui_standin.catalogue import DEFAULT_MODELS, build_catalogue
from rp_devstack.comfyui_standin.validation import PromptValidator
from rp_pipeline.workflows import get_workflow, list_workflows
from rp_pipeline.workflows.folder import model_files
from rp_pipeline.workflows.graph_check import check_graph
from rp_pipeline.workflows.nodes import object_info

from .test_contract import FIXTURES as REAL

ROOT = Path(__file__).resolve().parents[2]
TI2V = json.loads((ROOT / "workflows" / "wan22_ti2v_5b.json").read_text())


def recorded(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(prompt sent, JSON answer) of one recorded refusal of the real server."""
    path = REAL / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"recorded transcript {path} is not on this machine")
    exchange = json.loads(path.read_text())["post_prompt"]
    return exchange["request"]["json"]["prompt"], exchange["response"]["json"]


@pytest.mark.parametrize(
    ("fixture", "line"),
    [
        ("invalid_unknown_class_type", "node 1: class 'NoSuchNode' is not in the node catalogue"),
        ("invalid_missing_required_input", "node 1 (EmptyImage): required input 'width' is missing"),
        ("invalid_value_above_max", "node 1 (EmptyImage) input 'width': 99999 is bigger than its max of 16384"),
        ("invalid_wrong_type_string_for_int", "node 1 (EmptyImage) input 'width': 'abc' is not an INT"),
        ("invalid_link_wrong_output_index", "node 2 (SaveImage) input 'images': linked to output 5 of node 1 (EmptyImage), which has 1 output(s)"),
    ],
)  # fmt: skip
def test_every_recorded_refusal_is_refused_naming_the_same_node(fixture: str, line: str) -> None:
    prompt, answer = recorded(fixture)
    assert answer["error"]["type"] in ("invalid_prompt", "prompt_outputs_failed_validation")
    [ours] = check_graph(prompt, object_info(), model_files())
    assert ours.startswith(line)
    for node_id, entry in answer["node_errors"].items():
        assert ours.startswith(f"node {node_id} ")
        for error in entry["errors"]:
            name = error.get("extra_info", {}).get("input_name")
            assert name is None or f"'{name}'" in ours


def test_missing_model_files_are_refused_like_a_pod_without_weights() -> None:
    """The real server refused these loaders because no weights were installed; against an
    empty manifest ours names the same nodes and inputs (the start image is left to the pod:
    it is uploaded just before the prompt)."""
    prompt, answer = recorded("invalid_combo_missing_models_wan_i2v")
    lines = check_graph(prompt, object_info(), frozenset())
    refused = {
        (node_id, e["extra_info"]["input_name"])
        for node_id, entry in answer["node_errors"].items()
        for e in entry["errors"]
        if e["type"] == "value_not_in_list"
    }
    assert len(lines) == len(refused) == 4
    for node_id, name in refused:
        [line] = [x for x in lines if x.startswith(f"node {node_id} ")]
        assert f"input '{name}': model file '{prompt[node_id]['inputs'][name]}'" in line
        assert "add a manifest line for it" in line
    # With the image's manifest the WAN files are ones every pod downloads; the recording's
    # LoRA (a 480p one) is not in it and stays refused.
    [lora] = check_graph(prompt, object_info(), model_files())
    assert lora.startswith("node 4 (LoraLoaderModelOnly) input 'lora_name': model file")


def _break(change: str) -> dict[str, Any]:
    api = copy.deepcopy(TI2V)
    inputs = api["3"]["inputs"]  # KSampler
    if change == "unknown_class":
        api["8"]["class_type"] = "VAEDecodeTiledXL"
    elif change == "missing_required":
        del inputs["cfg"]
    elif change == "link_to_missing_node":
        inputs["model"] = ["999", 0]
    elif change == "link_id_not_a_string":
        inputs["model"] = [48, 0]
    elif change == "link_output_index":
        inputs["model"] = ["48", 3]
    elif change == "link_type":
        inputs["model"] = ["38", 0]  # CLIP into MODEL
    elif change == "not_an_int":
        inputs["steps"] = "many"
    elif change == "below_min":
        inputs["steps"] = 0
    elif change == "above_max":
        inputs["cfg"] = 101.0
    elif change == "not_in_list":
        inputs["sampler_name"] = "euler_fastest"
    elif change == "no_output":
        del api["58"]
    return api


CHANGES = [
    "unknown_class", "missing_required", "link_to_missing_node", "link_id_not_a_string",
    "link_output_index",
    "link_type", "not_an_int", "below_min", "above_max", "not_in_list", "no_output",
]  # fmt: skip


@pytest.mark.parametrize("change", CHANGES)
def test_we_refuse_exactly_what_comfyuis_validation_refuses(change: str) -> None:
    standin = PromptValidator(build_catalogue(DEFAULT_MODELS, []))
    api = _break(change)
    valid, error, _, node_errors = standin.validate(copy.deepcopy(api))
    ours = check_graph(api, object_info(), model_files())
    assert not valid and error is not None
    assert len(ours) == 1, ours
    where = list(node_errors) or [""]
    if where != [""]:  # the server's per-node table names the node we name
        assert ours[0].startswith(f"node {where[0]} "), (ours, node_errors)


def test_the_shipped_workflows_pass_both_checks() -> None:
    standin = PromptValidator(build_catalogue(DEFAULT_MODELS, []))
    for name in list_workflows():
        api = get_workflow(name).api_json
        assert check_graph(api, object_info(), model_files()) == [], name
        if "LoadImage" not in {n["class_type"] for n in api.values()}:
            valid, error, _, _ = standin.validate(copy.deepcopy(api))
            assert valid, (name, error)


def test_a_link_of_the_wrong_type_names_both_ends() -> None:
    [line] = check_graph(_break("link_type"), object_info(), model_files())
    assert line == (
        "node 3 (KSampler) input 'model': gets CLIP from node 38 (CLIPLoader) output 0, "
        "but takes MODEL"
    )


def test_nodes_no_output_depends_on_are_not_checked_as_comfyui_does() -> None:
    api = copy.deepcopy(TI2V)
    api["900"] = {"class_type": "EmptyImage", "inputs": {"width": "abc"}}
    assert check_graph(api, object_info(), model_files()) == []
    valid, _, _, _ = PromptValidator(build_catalogue(DEFAULT_MODELS, [])).validate(api)
    assert valid


def test_the_shipped_workflows_load_only_what_a_wan720p_fp8_pod_downloads() -> None:
    """Stricter than the check (any group, any tier): the files the default pod fetches."""
    from rp_agent.models.manifest import BUILTIN_MANIFEST, parse_manifest, select

    fetched = {
        e.name for e in select(parse_manifest(BUILTIN_MANIFEST), "fp8", {"WAN_720P": "true"})
    }
    for name in list_workflows():
        named = {
            value
            for node in get_workflow(name).api_json.values()
            for value in node["inputs"].values()
            if isinstance(value, str) and value.endswith(".safetensors")
        }
        assert named and named <= fetched, (name, sorted(named - fetched))
