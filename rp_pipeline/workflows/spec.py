"""What a workflow is to the pipeline: API-format JSON plus a map of parameter roles to inputs.

A role map says where each user parameter goes, e.g. `prompt -> [("89", "text")]`. Shipped
workflows' maps are in `catalog.py`; users bring their own API-format file with
`load_custom_workflow(path, param_map)`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Every parameter a workflow may accept.
PARAMS = (
    "prompt",
    "negative_prompt",
    "seed",
    "width",
    "height",
    "frames",
    "fps",
    "steps",
    "cfg",
    "filename_prefix",
    "input_image",
)

# Classes whose nodes write files the pipeline collects.
OUTPUT_CLASSES = {"SaveVideo", "SaveImage", "VHS_VideoCombine", "SaveAnimatedWEBP", "SaveWEBM"}

Target = tuple[str, str]  # (node id, input name)


class WorkflowError(Exception):
    """A workflow file or role map is unusable."""


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    api_json: dict[str, Any]
    roles: dict[str, list[Target]]
    defaults: dict[str, Any] = field(default_factory=dict)
    required: frozenset[str] = frozenset({"prompt"})
    # Two-stage (high/low noise) samplers split the schedule: these inputs get steps // 2.
    split_step_targets: tuple[Target, ...] = ()
    # Optional start image for workflows whose template has the LoadImage node bypassed:
    # (new LoadImage node id, target node id, target input). Present -> image-to-video.
    image_attach: tuple[str, str, str] | None = None
    description: str = ""
    source_template: str = ""

    @property
    def accepted(self) -> frozenset[str]:
        """Parameters this workflow accepts (seed and filename_prefix always)."""
        extra = {"input_image"} if self.image_attach else set()
        return frozenset(self.roles) | {"seed", "filename_prefix"} | extra

    @property
    def output_node_ids(self) -> list[str]:
        return sorted(
            (nid for nid, n in self.api_json.items() if n.get("class_type") in OUTPUT_CLASSES),
            key=_node_key,
        )


def canonical_json(api_json: dict[str, Any]) -> str:
    return json.dumps(api_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def workflow_hash(api_json: dict[str, Any]) -> str:
    """sha256 of the canonical API JSON template (before parameters are injected)."""
    return hashlib.sha256(canonical_json(api_json).encode("utf-8")).hexdigest()


def load_api_json(path: str | Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as ex:
        raise WorkflowError(f"cannot read workflow {path}: {ex}") from ex
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            f"{path} is a UI-format workflow; export it from ComfyUI with 'Export (API)'"
        )
    if (
        not isinstance(data, dict)
        or not data
        or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict)
            for n in data.values()
        )
    ):
        raise WorkflowError(
            f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})"
        )
    return data


def check_roles(api_json: dict[str, Any], roles: dict[str, list[Target]], where: str) -> None:
    problems = []
    for param, targets in roles.items():
        if param not in PARAMS:
            problems.append(f"unknown parameter {param!r} (known: {', '.join(PARAMS)})")
        for node_id, input_name in targets:
            node = api_json.get(node_id)
            if node is None:
                problems.append(f"{param}: node {node_id} is not in the workflow")
            elif input_name not in node["inputs"]:
                problems.append(
                    f"{param}: node {node_id} ({node['class_type']}) has no input {input_name!r}"
                )
    if problems:
        raise WorkflowError(f"bad parameter map for {where}: " + "; ".join(problems))


def parse_param_map(param_map: dict[str, Any]) -> dict[str, list[Target]]:
    """Accept {"prompt": "6.text"} or {"prompt": ["6.text", "7.text"]} or [("6", "text")]."""
    roles: dict[str, list[Target]] = {}
    for param, value in param_map.items():
        items = value if isinstance(value, list) else [value]
        targets: list[Target] = []
        for item in items:
            if isinstance(item, str) and "." in item:
                node_id, input_name = item.split(".", 1)
            elif isinstance(item, list | tuple) and len(item) == 2:
                node_id, input_name = str(item[0]), str(item[1])
            else:
                raise WorkflowError(f"{param}: target {item!r} is not 'node_id.input_name'")
            targets.append((node_id, input_name))
        roles[param] = targets
    return roles


def _node_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
