"""The workflows folder (RP_WORKFLOWS_DIR, default the project's `workflows/`): each
`<name>.json` (API format) with its parameters from `<name>.params.yaml` or its node titles,
checked against the node catalogue and the model manifest before anything runs it.

A workflow is read again only when one of its files (or the catalogue) changes, so the checks
cost nothing per request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rp_agent.models.manifest import ManifestError, load_manifest
from rp_pipeline.settings import current
from rp_pipeline.workflows.graph_check import check_graph, output_nodes
from rp_pipeline.workflows.nodes import CatalogueError, object_info
from rp_pipeline.workflows.param_map import (
    always_problems,
    params_from_map,
    params_from_titles,
    read_map_file,
    with_prefix_targets,
)
from rp_pipeline.workflows.spec import Param, WorkflowError, WorkflowSpec, load_api_json

MAP_SUFFIX = ".params.yaml"


def workflows_dir() -> Path:
    directory: Path = current("workflows_dir")
    return directory


def workflow_files(directory: Path | None = None) -> dict[str, Path]:
    """name -> `<name>.json` of the folder (its top level: `catalogue/` is not a workflow)."""
    directory = directory or workflows_dir()
    if not directory.is_dir():
        return {}
    return {path.stem: path for path in sorted(directory.glob("*.json"))}


def list_workflows() -> list[str]:
    return sorted(workflow_files())


def model_files() -> frozenset[str]:
    """Every file name the image's model manifest downloads (any group or tier)."""
    path: Path | None = current("models_manifest")
    try:
        entries = load_manifest({"MODELS_MANIFEST": str(path)} if path else {})
    except ManifestError as exc:
        raise WorkflowError("model manifest", [str(exc)]) from None
    return frozenset(entry.name for entry in entries)


def find_workflow(name: str) -> Path | None:
    """The file of a workflow named `name`, or `name` itself when it is a path to a file."""
    path = Path(name)
    if name.endswith(".json") and path.is_file():
        return path
    return workflow_files().get(name)


def load_workflow(path: Path) -> WorkflowSpec:
    """The workflow in `path`, its parameters and graph checked; WorkflowError lists every
    problem (one line each) when it cannot run."""
    map_path = path.with_name(path.stem + MAP_SUFFIX)
    try:
        catalogue = object_info()
    except CatalogueError as exc:
        raise WorkflowError(path.stem, [str(exc)]) from None
    key = (path.resolve(), _stamp(path), _stamp(map_path), id(catalogue), model_files())
    if key not in _loaded:
        if len(_loaded) > 256:  # files edited many times in one process
            _loaded.clear()
        try:
            _loaded[key] = _load(path.resolve(), map_path.exists(), catalogue, key[-1])
        except WorkflowError as exc:
            _loaded[key] = exc
    found = _loaded[key]
    if isinstance(found, WorkflowError):  # a fresh one: re-raising would grow its traceback
        raise WorkflowError(found.where, found.problems)
    return found


# (path, file stamps, catalogue, manifest) -> what reading it gave: unchanged files are not
# read and checked again.
_loaded: dict[Any, WorkflowSpec | WorkflowError] = {}


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _load(
    path: Path, has_map: bool, catalogue: dict[str, Any], models: frozenset[str]
) -> WorkflowSpec:
    name = path.stem
    try:
        api = load_api_json(path)
    except WorkflowError as exc:
        raise WorkflowError(name, exc.problems) from None
    map_path = path.with_name(name + MAP_SUFFIX)
    doc: dict[str, Any] = {}
    params: dict[str, Param] = {}
    if has_map:
        doc, problems = read_map_file(map_path)
        if not problems:
            params, problems = params_from_map(doc, api, catalogue)
    else:
        params, problems = params_from_titles(api, catalogue)
    problems = problems + check_graph(api, catalogue, models)
    if problems:
        raise WorkflowError(name, problems)
    outputs = output_nodes(api, catalogue)
    params = with_prefix_targets(params, api, outputs)
    problems = always_problems(params)
    if not params:
        problems.append(
            f"no parameters: write {map_path.name} beside it, or mark inputs in node titles "
            "($prompt:text)"
        )
    if problems:
        raise WorkflowError(name, problems)
    gpu = doc.get("gpu_memory_gb")
    return WorkflowSpec(
        name=name,
        api_json=api,
        params=params,
        description=str(doc.get("description") or f"workflow {path.name}"),
        gpu_memory_gb=float(gpu) if isinstance(gpu, int | float) else None,
        source_template=str(doc.get("source_template") or ""),
        source=str(path),
        output_node_ids=outputs,
    )
