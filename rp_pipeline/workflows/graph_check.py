"""A whole API-format graph checked as ComfyUI's `/prompt` checks it, before any pod exists.

The checks follow ComfyUI's `execution.validate_prompt` / `validate_inputs` (0.3.64), so what is
refused here is what the pod's ComfyUI would refuse (or fail on at once), one line each naming
the node and input:
- every node's class is in the catalogue (`invalid_prompt`: "node X does not exist"),
- the graph has an output node (`prompt_no_outputs`),
- for each node an output node depends on: required inputs present
  (`required_input_missing`); links are `[node id, output index]` to an existing node and an
  output it has, of the type the input takes (`bad_linked_input`, `return_type_mismatch`; a
  dangling link is an exception inside the server's validation); values convert to INT/FLOAT
  (`invalid_input_type`), lie within min/max (`value_smaller_than_min`/`bigger_than_max`) and
  are among a combo's choices (`value_not_in_list`).
Stricter than the server in one way: a model file a loader names must be one the image
downloads (the model manifest) or one the catalogue lists. The recorded catalogue lists no
model files (no weights were installed), and a pod without the file refuses the prompt with
`value_not_in_list` only after it was paid for. Inputs that name an uploaded file (LoadImage's
`image`) are left to the pod: the file is uploaded just before the prompt is queued.
"""

from __future__ import annotations

import json
import reprlib
from collections.abc import Collection
from typing import Any

from rp_pipeline.workflows.nodes import combo_options, input_names, input_spec
from rp_pipeline.workflows.spec import node_key

# Combo inputs naming a file uploaded to input/ at run time.
UPLOADED_INPUTS = {
    ("LoadImage", "image"),
    ("LoadImageMask", "image"),
    ("LoadVideo", "file"),
    ("LoadAudio", "audio"),
    ("VHS_LoadVideo", "video"),
}
# A combo value with one of these endings names a model file (any loader, custom ones too).
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".gguf", ".onnx")
# The real server checks these at run time, not validation (SaveVideo format "webm" is queued
# and fails when the node runs): refused here all the same, the pod would fail on them.


def output_nodes(api: dict[str, Any], catalogue: dict[str, Any]) -> list[str]:
    """Node ids whose class is an output node (writes files), in node order."""
    found = [
        node_id
        for node_id, node in api.items()
        if (catalogue.get(node.get("class_type")) or {}).get("output_node") is True
    ]
    return sorted(found, key=node_key)


def check_graph(
    api: dict[str, Any], catalogue: dict[str, Any], model_files: Collection[str]
) -> list[str]:
    """One line per problem ComfyUI would refuse the graph for (empty: it would queue it)."""
    unknown = [
        f"node {node_id}: class {node.get('class_type')!r} is not in the node catalogue "
        "(a custom node the image does not install, or a typo); install its package in the "
        "image and add its /object_info snapshot to the catalogue folder"
        for node_id, node in sorted(api.items(), key=lambda item: node_key(item[0]))
        if node.get("class_type") not in catalogue
    ]
    if unknown:
        return unknown  # the server stops at the first unknown class too
    outputs = output_nodes(api, catalogue)
    if not outputs:
        return ["the workflow has no output node (one that saves files, e.g. SaveVideo)"]
    problems: list[str] = []
    for node_id in _reachable(api, outputs):
        problems += _node_problems(api, node_id, catalogue, model_files)
    return problems


def _reachable(api: dict[str, Any], outputs: list[str]) -> list[str]:
    """The nodes the output nodes depend on (ComfyUI validates only those), in node order."""
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in api:
            continue
        seen.add(node_id)
        for value in api[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2:
                stack.append(str(value[0]))
    return sorted(seen, key=node_key)


def _node_problems(
    api: dict[str, Any], node_id: str, catalogue: dict[str, Any], model_files: Collection[str]
) -> list[str]:
    node = api[node_id]
    class_type = node["class_type"]
    info = catalogue[class_type]
    inputs = node["inputs"]
    where = f"node {node_id} ({class_type})"
    problems = [
        f"{where}: required input {name!r} is missing"
        for name in input_names(info, "required")
        if name not in inputs
    ]
    for name, value in inputs.items():
        spec = input_spec(info, name)
        if spec is None:
            continue  # ComfyUI ignores inputs its class does not declare
        input_type, _, options = spec
        if isinstance(value, list):
            problem = _link_problem(api, catalogue, value, input_type)
            if problem:
                problems.append(f"{where} input {name!r}: {problem}")
            continue
        problem = _value_problem(class_type, name, value, input_type, options, model_files)
        if problem:
            problems.append(f"{where} input {name!r}: {problem}")
    return problems


def _link_problem(
    api: dict[str, Any], catalogue: dict[str, Any], link: list[Any], wanted: Any
) -> str | None:
    if len(link) != 2 or not isinstance(link[1], int) or isinstance(link[1], bool):
        return f"bad link {reprlib.repr(link)}: a link is [node id, output index]"
    origin_id, index = link[0], link[1]
    if not isinstance(origin_id, str):  # ComfyUI looks the id up as given: 8 is not "8"
        example = json.dumps([str(origin_id), index])
        return f"linked to node {origin_id!r}: a link names its node as a string, e.g. {example}"
    origin = api.get(origin_id)
    if origin is None:
        return f"linked to node {origin_id}, which is not in the workflow"
    origin_info = catalogue.get(origin.get("class_type")) or {}
    outputs = list(origin_info.get("output") or [])
    if not 0 <= index < len(outputs):
        return (
            f"linked to output {index} of node {origin_id} ({origin['class_type']}), which has "
            f"{len(outputs)} output(s)"
        )
    received = outputs[index]
    if not _types_match(received, wanted):
        shown = "a choice" if isinstance(wanted, list) else wanted
        return (
            f"gets {received} from node {origin_id} ({origin['class_type']}) output {index}, "
            f"but takes {shown}"
        )
    return None


def _types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's rule: equal, either is "*", or the comma-separated type sets overlap."""
    if not isinstance(wanted, str):
        return received == "COMBO"
    received = str(received)
    if received == wanted or "*" in (received, wanted):
        return True
    return bool(set(received.split(",")) & set(wanted.split(",")))


def _value_problem(
    class_type: str,
    name: str,
    value: Any,
    input_type: Any,
    options: dict[str, Any],
    model_files: Collection[str],
) -> str | None:
    if input_type in ("INT", "FLOAT"):
        try:  # the server converts as int(value) / float(value) and refuses what fails
            value = int(value) if input_type == "INT" else float(value)
        except (TypeError, ValueError, OverflowError):
            return (
                f"{reprlib.repr(value)} is not {'an' if input_type == 'INT' else 'a'} {input_type}"
            )
        if "min" in options and value < options["min"]:
            return f"{value} is smaller than its min of {options['min']}"
        if "max" in options and value > options["max"]:
            return f"{value} is bigger than its max of {options['max']}"
        return None
    choices = combo_options(input_type, options)
    if choices is None or (class_type, name) in UPLOADED_INPUTS:
        return None
    if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
        if value in model_files or value in choices:
            return None
        return (
            f"model file {value!r} is neither in the image's model manifest nor in the node "
            "catalogue: add a manifest line for it (GROUP TIER SOURCE PATH SUBDIR MIN_MB, in "
            "rp_agent/models/manifest.py or the file RP_MODELS_MANIFEST names) so pods download it"
        )
    if value not in choices:
        shown = ", ".join(map(str, choices[:20])) + (", ..." if len(choices) > 20 else "")
        return f"{reprlib.repr(value)} is not one of its choices ({shown})"
    return None
