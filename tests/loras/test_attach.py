"""LoRA references and the graph change, on the shipped workflow JSONs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rp_pipeline.workflows import get_workflow
from rp_pipeline.workflows.loras import (
    LoraError,
    attach_loras,
    parse_loras,
    pod_env_value,
)
from rp_pipeline.workflows.spec import WorkflowError

SHA = "ab" * 32
HF = "https://huggingface.co/owner/repo/resolve/0123abc/wan_style_high.safetensors"


def model_path(api: dict[str, Any], sampler: str) -> list[str]:
    """Class types from the sampler's model input up to the loader, loader last."""
    chain, node = [], sampler
    while (link := api[node]["inputs"].get("model")) is not None:
        node = link[0]
        chain.append((api[node]["class_type"], api[node]["inputs"].get("lora_name")))
    return chain


def test_references_of_each_kind_are_named_as_the_pod_saves_them() -> None:
    refs = parse_loras(
        [
            {"file": "style.safetensors", "strength": 0.8},
            {"url": HF, "sha256": SHA.upper()},
            {"url": "https://civitai.com/api/download/models/12345"},
            {"r2": "loras/sub/x.safetensors", "expert": "low"},
        ]
    )
    assert [(r.name, r.source) for r in refs] == [
        ("style.safetensors", "file"),
        ("wan_style_high.safetensors", "hf"),
        ("civitai_12345.safetensors", "civitai"),
        ("x.safetensors", "r2"),
    ]
    assert refs[1].sha256 == SHA and refs[0].strength == 0.8 and refs[3].expert == "low"
    assert [parse_loras([r.to_dict()])[0] for r in refs] == list(refs)
    wire = json.loads(pod_env_value(refs + refs))
    assert len(wire) == 4 and wire[3] == {
        "name": "x.safetensors",
        "source": "r2",
        "location": "loras/sub/x.safetensors",
    }


def test_each_bad_entry_gets_its_own_line() -> None:
    with pytest.raises(LoraError) as caught:
        parse_loras(
            [
                {"file": "ok.safetensors"},
                "x.safetensors",
                {"url": "http://example.com/a.safetensors"},
                {"url": "https://huggingface.co/o/r/blob/main/a.safetensors"},
                {"url": "https://civitai.com/models/123"},
                {"file": "../etc/passwd"},
                {"file": "a.safetensors", "r2": "b.safetensors"},
                {"r2": "x.safetensors", "strength": "high"},
                {"file": "y.safetensors", "sha256": "abc"},
                {"file": "z.safetensors", "expert": "middle"},
                {"file": "w.safetensors", "weight": 1},
                {"url": "https://civitai.com/api/download/models/1?token=abc123"},
                {"url": "https://user:pw@example.com/a.safetensors"},
                {"r2": "other/ok.safetensors"},
            ]
        )
    problems = caught.value.problems
    assert [p.split(":")[0] for p in problems] == [f"loras[{i}]" for i in range(1, 14)]
    assert all("must not carry credentials" in p for p in problems[10:12])
    assert not any("abc123" in p or ":pw@" in p for p in problems)
    assert "https URL" in problems[1] and "/resolve/" in problems[2]
    assert "api/download/models" in problems[3] and "exactly one" in problems[5]
    assert "two different references" in problems[-1]
    with pytest.raises(LoraError, match="must be a list"):
        parse_loras({"file": "x.safetensors"})
    assert parse_loras(None) == ()


def test_two_expert_workflow_gets_the_lora_on_both_paths_after_lightx2v() -> None:
    spec = get_workflow("wan22_i2v_14b_lightx2v")
    refs = parse_loras([{"file": "a.safetensors", "strength": 0.7}, {"file": "b.safetensors"}])
    api = attach_loras(spec.api_json, refs)
    assert spec.api_json == get_workflow("wan22_i2v_14b_lightx2v").api_json  # not mutated
    for sampler in ("86", "85"):
        chain = model_path(api, sampler)
        assert [c[0] for c in chain] == [
            "ModelSamplingSD3", "LoraLoaderModelOnly", "LoraLoaderModelOnly",
            "LoraLoaderModelOnly", "UNETLoader",
        ]  # fmt: skip
        # ours nearest the sampler in request order (b applied last), then lightx2v
        assert chain[1][1] == "b.safetensors" and chain[2][1] == "a.safetensors"
        assert "lightx2v" in chain[3][1]
    new = [v for k, v in api.items() if k not in spec.api_json]
    assert len(new) == 4
    assert {n["inputs"]["strength_model"] for n in new} == {0.7, 1.0}


def test_expert_selects_one_path_of_t2v_14b() -> None:
    spec = get_workflow("wan22_t2v_14b")
    refs = parse_loras(
        [{"file": "hi.safetensors", "expert": "high"}, {"file": "lo.safetensors", "expert": "low"}]
    )
    api = attach_loras(spec.api_json, refs)
    # 81 starts from the empty latent (high noise expert), 78 continues 81's latent.
    assert [c[1] for c in model_path(api, "81")][:2] == [None, "hi.safetensors"]
    assert [c[1] for c in model_path(api, "78")][:2] == [None, "lo.safetensors"]
    assert model_path(api, "81")[-1][0] == "UNETLoader"


def test_single_model_workflow_and_a_missing_expert() -> None:
    spec = get_workflow("wan22_ti2v_5b")
    api = attach_loras(spec.api_json, parse_loras([{"file": "s.safetensors"}]))
    assert [c[0] for c in model_path(api, "3")] == [
        "ModelSamplingSD3",
        "LoraLoaderModelOnly",
        "UNETLoader",
    ]
    with pytest.raises(WorkflowError, match="expert"):
        attach_loras(spec.api_json, parse_loras([{"file": "s.safetensors", "expert": "high"}]))
    assert attach_loras(spec.api_json, ()) == spec.api_json


def test_patched_graphs_validate_in_the_standin_catalogue() -> None:
    """The inserted nodes have exactly LoraLoaderModelOnly's inputs in the real /object_info."""
    from rp_devstack.comfyui_standin.catalogue import CORE_CATALOGUE

    info = json.loads(CORE_CATALOGUE.read_text())["LoraLoaderModelOnly"]["input"]["required"]
    api = attach_loras(
        get_workflow("wan22_t2v_14b").api_json, parse_loras([{"file": "s.safetensors"}])
    )
    for node in api.values():
        if node["class_type"] == "LoraLoaderModelOnly":
            assert set(node["inputs"]) == set(info)
