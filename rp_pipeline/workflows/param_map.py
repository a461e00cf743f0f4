"""A workflow's parameters: from its map file `<name>.params.yaml`, else from its node titles.

Map file (every key but `to` optional; `type` defaults to what the first target's input takes):

    description: WAN 2.2 text-to-video 14B, 720p
    gpu_memory_gb: 48
    parameters:
      prompt: {to: ["89.text"], type: text, required: true}
      steps:  {to: ["81.steps", "78.steps"], half_to: ["81.end_at_step"], min: 2, max: 100}
      input_image: {type: image, attach: {node: "56", to: "55.start_image"}}

`half_to` targets get `value // 2` (two-stage samplers); `attach` adds a LoadImage node with
that id and links it to `to` only when the request gives the image.

Title markers, when there is no map file: `$name` or `$name:input` anywhere in a node's title
(`_meta.title`, which ComfyUI's "Export (API)" writes) makes that node input the parameter
`name`; `$name` alone means the input called `name`. The same name on several nodes fills them
all. A parameter called `prompt` is required; every other one defaults to the workflow's value.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from rp_pipeline.workflows.nodes import input_spec, value_kind
from rp_pipeline.workflows.spec import ALWAYS, TYPES, Param, Target

MAX_MAP_BYTES = 64 * 1024
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
MARKER = re.compile(rf"\$({_NAME})(?::({_NAME}))?")
_PARAM_KEYS = {"to", "type", "required", "default", "min", "max", "choices", "half_to"}
_PARAM_KEYS |= {"attach", "description"}
_MAP_KEYS = {"description", "gpu_memory_gb", "source_template", "parameters"}
# Where a start image goes: the combo input of the nodes that read an uploaded file.
IMAGE_LOADERS = {"LoadImage": "image", "LoadImageMask": "image"}


def read_map_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The map file's document and one line per problem of its shape."""
    try:
        if path.stat().st_size > MAX_MAP_BYTES:
            return {}, [f"{path.name}: over {MAX_MAP_BYTES} bytes; a parameter map is small"]
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        return {}, [f"{path.name}: cannot read it ({exc.strerror})"]
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        return {}, [f"{path.name}: not YAML ({' '.join(str(exc).split())})"]
    if not isinstance(doc, dict) or not isinstance(doc.get("parameters"), dict):
        return {}, [f"{path.name}: expected a mapping with 'parameters: {{name: {{to: ...}}}}'"]
    extra = sorted(set(doc) - _MAP_KEYS)
    if extra:
        return doc, [f"{path.name}: unknown key(s) {', '.join(extra)} (known: {_known(_MAP_KEYS)})"]
    return doc, []


def params_from_map(
    doc: dict[str, Any], api: dict[str, Any], catalogue: dict[str, Any]
) -> tuple[dict[str, Param], list[str]]:
    params: dict[str, Param] = {}
    problems: list[str] = []
    for name, entry in doc["parameters"].items():
        where = f"parameter {name!r}"
        if not isinstance(name, str) or not re.fullmatch(_NAME, name):
            problems.append(f"{where}: a name is letters, digits and '_'")
            continue
        if not isinstance(entry, dict):
            problems.append(f'{where}: expected {{to: ["<node id>.<input>"], ...}}')
            continue
        extra = sorted(set(entry) - _PARAM_KEYS)
        if extra:
            problems.append(
                f"{where}: unknown key(s) {', '.join(extra)} (known: {_known(_PARAM_KEYS)})"
            )
            continue
        found: list[str] = []
        targets = _targets(entry.get("to"), where, found, required=not entry.get("attach"))
        half = _targets(entry.get("half_to"), where + " half_to", found, required=False)
        attach = _attach(entry.get("attach"), where, api, found)
        for target in targets + half:
            found += _target_problems(where, target, api)
        kind = entry.get("type") or _inferred_type(targets, api, catalogue) or "text"
        if kind not in TYPES:
            found.append(f"{where}: type {kind!r} is not one of {', '.join(TYPES)}")
        choices = entry.get("choices")
        if choices is not None and not isinstance(choices, list):
            found.append(f"{where}: choices must be a list")
        if found:
            problems += found
            continue
        params[name] = Param(
            name=name,
            targets=tuple(targets),
            type=kind,
            required=bool(entry.get("required", False)),
            default=entry.get("default"),
            min=entry.get("min"),
            max=entry.get("max"),
            choices=tuple(choices) if choices is not None else None,
            half_targets=tuple(half),
            attach=attach,
            description=str(entry.get("description") or ""),
        )
    return params, problems


def params_from_titles(
    api: dict[str, Any], catalogue: dict[str, Any]
) -> tuple[dict[str, Param], list[str]]:
    """Parameters marked `$name` / `$name:input` in node titles."""
    targets: dict[str, list[Target]] = {}
    problems: list[str] = []
    for node_id, node in api.items():
        title = str((node.get("_meta") or {}).get("title") or "")
        for name, input_name in MARKER.findall(title):
            input_name = input_name or name
            where = f"node {node_id} title {title!r}"
            if input_name not in node["inputs"]:
                problems.append(
                    f"{where}: node {node_id} ({node['class_type']}) has no input "
                    f"{input_name!r}; write ${name}:<input> with one of "
                    f"{', '.join(sorted(node['inputs'])) or 'none'}"
                )
                continue
            found = _target_problems(f"parameter {name!r}", (node_id, input_name), api)
            problems += found
            if not found:
                targets.setdefault(name, []).append((node_id, input_name))
    params = {
        name: Param(
            name=name,
            targets=tuple(where),
            type=_inferred_type(where, api, catalogue) or "text",
            required=name == "prompt",
        )
        for name, where in targets.items()
    }
    return params, problems


def with_prefix_targets(
    params: dict[str, Param], api: dict[str, Any], outputs: list[str]
) -> dict[str, Param]:
    """Unless mapped, `filename_prefix` fills every output node's own prefix input."""
    if "filename_prefix" in params:
        return params
    targets = tuple(
        (node_id, "filename_prefix")
        for node_id in outputs
        if isinstance(api[node_id]["inputs"].get("filename_prefix"), str)
    )
    if not targets:
        return params
    return {**params, "filename_prefix": Param("filename_prefix", targets, "text")}


def always_problems(params: dict[str, Param]) -> list[str]:
    """seed and filename_prefix keep their meaning in every workflow; the start image a request
    uploads is `input_image`."""
    problems = [
        f"parameter {name!r}: an image parameter is the request's start image, so it must be "
        "called input_image"
        for name, param in params.items()
        if param.type == "image" and name != "input_image"
    ]
    for name in ALWAYS:
        param = params.get(name)
        wanted = "int" if name == "seed" else "text"
        if param is not None and param.type != wanted:
            problems.append(f"parameter {name!r} must be of type {wanted} (got {param.type})")
    return problems


def _targets(value: Any, where: str, problems: list[str], required: bool) -> list[Target]:
    if value is None:
        if required:
            problems.append(
                f"{where}: 'to' is missing: the node inputs it fills, as \"<id>.<input>\""
            )
        return []
    items = value if isinstance(value, list) else [value]
    found = []
    for item in items:
        if isinstance(item, str) and "." in item:
            node_id, input_name = item.split(".", 1)
            found.append((node_id, input_name))
        else:
            problems.append(f'{where}: target {item!r} is not "<node id>.<input name>"')
    return found


def _attach(value: Any, where: str, api: dict[str, Any], problems: list[str]) -> Any:
    if value is None:
        return None
    target = value.get("to") if isinstance(value, dict) else None
    node = str(value.get("node", "")) if isinstance(value, dict) else ""
    if not node or not isinstance(target, str) or "." not in target:
        problems.append(f'{where}: attach needs {{node: <new LoadImage id>, to: "<id>.<input>"}}')
        return None
    if node in api:
        problems.append(f"{where}: attach node {node} is already in the workflow; pick a free id")
    target_id, target_input = target.split(".", 1)
    if target_id not in api:
        problems.append(f"{where}: attach target node {target_id} is not in the workflow")
    return (node, target_id, target_input)


def _target_problems(where: str, target: Target, api: dict[str, Any]) -> list[str]:
    node_id, input_name = target
    node = api.get(node_id)
    if node is None:
        return [f"{where}: node {node_id} is not in the workflow"]
    if input_name not in node["inputs"]:
        return [f"{where}: node {node_id} ({node['class_type']}) has no input {input_name!r}"]
    if isinstance(node["inputs"][input_name], list):
        return [
            f"{where}: {node_id}.{input_name} is linked from node "
            f"{node['inputs'][input_name][0]}; map a value input, not a link"
        ]
    return []


def _inferred_type(
    targets: list[Target] | tuple[Target, ...], api: dict[str, Any], catalogue: dict[str, Any]
) -> str | None:
    if not targets:
        return None
    node_id, input_name = targets[0]
    node = api.get(node_id) or {}
    class_type = str(node.get("class_type"))
    if IMAGE_LOADERS.get(class_type) == input_name:
        return "image"
    info = catalogue.get(class_type)
    spec = input_spec(info, input_name) if info else None
    return value_kind(spec[0]) if spec else None


def _known(keys: set[str]) -> str:
    return ", ".join(sorted(keys))
