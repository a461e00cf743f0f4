"""Parameter validation and injection: runs before any pod exists, so mistakes cost nothing.

`validate_params` reports every problem at once (one `WorkflowParamError`, one line each): the
workflow's own (unknown node class, bad link, model file not in the manifest, ...), then the
request's parameter values, then the rendered graph against the node catalogue. `render_workflow`
fills each parameter's node inputs, picks (and records) a random seed when none is given and
derives a unique `filename_prefix` per request so a cached identical prompt can never hide new
files behind old names.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from rp_agent import keys
from rp_pipeline.workflows.folder import (
    find_workflow,
    list_workflows,
    load_workflow,
    model_files,
    workflows_dir,
)
from rp_pipeline.workflows.graph_check import check_graph
from rp_pipeline.workflows.nodes import CatalogueError, object_info
from rp_pipeline.workflows.param_check import param_problems
from rp_pipeline.workflows.spec import WorkflowError, WorkflowSpec, workflow_hash

_RANDOM_SEED_BITS = 50  # stays exact in JSON numbers everywhere (JS clients included)


class WorkflowParamError(ValueError):
    """A workflow that cannot run these parameters; `problems` lists each one."""

    def __init__(self, name: str, problems: list[str], lead: str | None = None) -> None:
        self.workflow = name
        self.problems = problems
        lead = lead or f"invalid parameters for workflow {name!r}"
        # One line: it is shown as is in run failures, logs and the CLI.
        super().__init__(f"{lead}: " + "; ".join(problems))


@dataclass(frozen=True)
class RenderedWorkflow:
    name: str
    api_json: dict[str, Any]
    seed: int
    filename_prefix: str
    params: dict[str, Any]
    workflow_hash: str
    output_node_ids: list[str]


def get_workflow(name: str | WorkflowSpec) -> WorkflowSpec:
    """A workflow of the folder by name (or a path to a `.json`), checked; WorkflowParamError
    naming every problem when it is unknown or cannot run."""
    if isinstance(name, WorkflowSpec):
        return name
    path = find_workflow(str(name))
    if path is None:
        known = ", ".join(list_workflows()) or f"none (no *.json in {workflows_dir()})"
        raise WorkflowParamError(
            str(name), [f"unknown workflow {name!r}; known: {known}"], lead="no such workflow"
        )
    try:
        return load_workflow(path)
    except (WorkflowError, CatalogueError) as exc:
        problems = exc.problems if isinstance(exc, WorkflowError) else [str(exc)]
        raise WorkflowParamError(
            str(name), problems, lead=f"workflow {name!r} is refused"
        ) from None


def defaults(spec: WorkflowSpec) -> dict[str, Any]:
    """Each parameter's value in the workflow (its map default, else its first target's)."""
    values = {}
    for name, param in spec.params.items():
        if param.default is not None:
            values[name] = param.default
        elif param.targets:
            node_id, input_name = param.targets[0]
            values[name] = spec.api_json[node_id]["inputs"][input_name]
    return values


def validate_params(name: str | WorkflowSpec, params: dict[str, Any]) -> None:
    """Raise WorkflowParamError listing every problem with these parameters."""
    spec = get_workflow(name)
    problems = param_problems(spec, params)
    if not problems:
        rendered = _render(spec, params, request_id="check")
        problems = check_graph(rendered.api_json, object_info(), model_files())
    if problems:
        raise WorkflowParamError(spec.name, problems)


def render_workflow(
    name: str | WorkflowSpec, params: dict[str, Any], request_id: str | None = None
) -> RenderedWorkflow:
    """Validated API JSON ready for `POST /prompt`, with the seed and prefix it used."""
    spec = get_workflow(name)
    validate_params(spec, params)
    return _render(spec, params, request_id)


def _render(spec: WorkflowSpec, params: dict[str, Any], request_id: str | None) -> RenderedWorkflow:
    # None means "the workflow's value"; so does an empty text that is not required (callers
    # send "" for "not given", and the official templates' negative prompt is part of their
    # quality).
    given = {k: v for k, v in params.items() if v is not None}
    for key, param in spec.params.items():
        value = given.get(key)
        blank = isinstance(value, str) and not value.strip()
        if param.type == "text" and not param.required and blank:
            given.pop(key)
    resolved = {**defaults(spec), **given}
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbits(_RANDOM_SEED_BITS)
    resolved["seed"] = seed
    prefix = params.get("filename_prefix") or default_prefix(spec.name, request_id)
    resolved["filename_prefix"] = prefix
    api = copy.deepcopy(spec.api_json)
    for key, param in spec.params.items():
        if key not in resolved:
            continue
        value = float(resolved[key]) if param.type == "float" else resolved[key]
        for node_id, input_name in param.targets:
            api[node_id]["inputs"][input_name] = value
        for node_id, input_name in param.half_targets:
            api[node_id]["inputs"][input_name] = max(1, int(value) // 2)
        if param.attach and resolved.get(key):
            loader_id, target_id, target_input = param.attach
            api[loader_id] = {
                "inputs": {"image": resolved[key]},
                "class_type": "LoadImage",
                "_meta": {"title": "Load Image"},
            }
            api[target_id]["inputs"][target_input] = [loader_id, 0]
    return RenderedWorkflow(
        name=spec.name,
        api_json=api,
        seed=int(seed),
        filename_prefix=prefix,
        params={k: resolved[k] for k in sorted(resolved)},
        workflow_hash=workflow_hash(spec.api_json),
        output_node_ids=spec.output_node_ids,
    )


def default_prefix(workflow: str, request_id: str | None) -> str:
    """`video/<workflow>/<request id>`: unique per request, grouped per workflow."""
    return keys.default_prefix(workflow, request_id or uuid.uuid4().hex[:16])


def workflow_problems(name: str) -> list[str]:
    """Every problem of one workflow as a whole (empty: it can run), for the CLI and the run's
    first op."""
    try:
        get_workflow(name)
    except WorkflowParamError as exc:
        return exc.problems
    return []
