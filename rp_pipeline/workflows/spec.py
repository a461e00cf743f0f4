"""What a workflow is to the pipeline: API-format JSON plus its parameters, each naming the node
inputs it fills.

A workflow lives in the workflows folder as `<name>.json` (ComfyUI's "Export (API)") with a
parameter map `<name>.params.yaml` beside it, or parameters marked in node titles (see
`param_map`). Parameter names are the workflow's own; a request passes them by name.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Parameter names the request model and the shipped workflows share (a workflow may define any
# others): they keep working for every workflow that maps them.
STANDARD_PARAMS = (
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
# Parameters every workflow takes: a seed (random and recorded when not given) and the
# per-request file name prefix (so a cached identical prompt can never hide new files).
ALWAYS = ("seed", "filename_prefix")
TYPES = ("text", "int", "float", "bool", "choice", "image")

Target = tuple[str, str]  # (node id, input name)


class WorkflowError(Exception):
    """A workflow file or parameter map is unusable; `problems` has one line each."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.where = where
        self.problems = problems
        super().__init__(f"{where}: " + "; ".join(problems))


@dataclass(frozen=True)
class Param:
    """One parameter: where its value goes and what it accepts.

    `half_targets` get `value // 2` (two-stage samplers split the schedule between experts);
    `attach` = (new LoadImage node id, target node id, target input): an optional start image
    that, when given, adds a LoadImage node and links it to the target (a template whose
    LoadImage is bypassed)."""

    name: str
    targets: tuple[Target, ...]
    type: str
    required: bool = False
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    half_targets: tuple[Target, ...] = ()
    attach: tuple[str, str, str] | None = None
    description: str = ""


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    api_json: dict[str, Any]
    params: dict[str, Param]
    description: str = ""
    gpu_memory_gb: float | None = None
    source_template: str = ""
    # Where it was read from (the .json file), for messages.
    source: str = ""
    # Node ids whose class writes files (the catalogue's output nodes).
    output_node_ids: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> list[str]:
        """Every parameter a request may pass, sorted."""
        return sorted(set(self.params) | set(ALWAYS))

    @property
    def required(self) -> list[str]:
        return sorted(name for name, p in self.params.items() if p.required)


def canonical_json(api_json: dict[str, Any]) -> str:
    return json.dumps(api_json, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def workflow_hash(api_json: dict[str, Any]) -> str:
    """sha256 of the canonical API JSON template (before parameters are injected)."""
    return hashlib.sha256(canonical_json(api_json).encode("utf-8")).hexdigest()


def load_api_json(path: str | Path) -> dict[str, Any]:
    """An API-format workflow file; WorkflowError (one line) when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as ex:
        raise WorkflowError(str(path), [f"cannot read it ({ex.strerror})"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as ex:
        raise WorkflowError(str(path), [f"not JSON ({ex})"]) from None
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(
            str(path), ["a UI-format workflow: export it from ComfyUI with 'Export (API)'"]
        )
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and len(data) <= 3:
        data = data["prompt"]  # a saved POST /prompt body
    if (
        not isinstance(data, dict)
        or not data
        or not all(
            isinstance(n, dict) and "class_type" in n and isinstance(n.get("inputs"), dict)
            for n in data.values()
        )
    ):
        raise WorkflowError(
            str(path), ["not an API-format workflow ({node id: {class_type, inputs}})"]
        )
    return data


def node_key(node_id: str) -> tuple[int, str]:
    """Numeric node ids in number order, others after them."""
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)
