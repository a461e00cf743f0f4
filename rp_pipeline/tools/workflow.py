"""`rp-launch workflow check NAME|PATH` and `rp-launch workflow list`: a workflow checked the way
a run checks it before renting a pod (node classes, inputs, links, values against the node
catalogue; model files against the image's manifest; its parameter map), with no RunPod call.

check prints `OK <name>: <description>` and one line per parameter, or one line per problem
and exits 2.
"""

from __future__ import annotations

import argparse
import json
import reprlib
from typing import Any

from rp_pipeline.workflows import (
    WorkflowParamError,
    WorkflowSpec,
    defaults,
    get_workflow,
    list_workflows,
    workflows_dir,
)
from rp_pipeline.workflows.nodes import catalogue_dir


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    workflow = sub.add_parser(
        "workflow",
        parents=[common],
        help="check or list ComfyUI workflows (no RunPod call, no key needed)",
    )
    commands = workflow.add_subparsers(dest="workflow_command", required=True)
    check = commands.add_parser(
        "check",
        parents=[common],
        help="check one workflow as a run would before any pod: exit 2 with one line per problem",
    )
    check.add_argument("workflow", help="a workflow name of the folder, or a path to its .json")
    commands.add_parser("list", parents=[common], help="the workflows folder, one line each")


def run(args: argparse.Namespace) -> int:
    if args.workflow_command == "list":
        return _list(args)
    return _check(args)


def _check(args: argparse.Namespace) -> int:
    try:
        spec = get_workflow(args.workflow)
    except WorkflowParamError as exc:
        if args.json:
            print(json.dumps({"ok": False, "workflow": args.workflow, "problems": exc.problems}))
        else:
            for line in exc.problems:
                print(f"{args.workflow}: {line}")
        return 2
    if args.json:
        print(json.dumps({"ok": True, **describe(spec)}, default=str))
        return 0
    needs = f" (GPU memory: {spec.gpu_memory_gb:g} GB)" if spec.gpu_memory_gb else ""
    print(f"OK {spec.name}: {spec.description}{needs}")
    for line in parameter_lines(spec):
        print(f"  {line}")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for name in list_workflows():
        try:
            spec = get_workflow(name)
            rows.append({"name": name, "ok": True, "description": spec.description,
                         "parameters": sorted(spec.params)})  # fmt: skip
        except WorkflowParamError as exc:
            rows.append({"name": name, "ok": False, "problems": exc.problems})
    if args.json:
        print(json.dumps({"folder": str(workflows_dir()), "catalogue": str(catalogue_dir()),
                          "workflows": rows}))  # fmt: skip
        return 0
    print(f"workflows in {workflows_dir()} (nodes: {catalogue_dir()})")
    for row in rows:
        if row["ok"]:
            print(f"  {row['name']}: {row['description']} ({', '.join(row['parameters'])})")
        else:
            print(f"  {row['name']}: REFUSED, {len(row['problems'])} problem(s): "
                  f"`rp-launch workflow check {row['name']}`")  # fmt: skip
    return 0


def describe(spec: WorkflowSpec) -> dict[str, Any]:
    values = defaults(spec)
    return {
        "workflow": spec.name,
        "description": spec.description,
        "gpu_memory_gb": spec.gpu_memory_gb,
        "source": spec.source,
        "parameters": {
            name: {
                "type": p.type,
                "required": p.required,
                "default": values.get(name),
                "to": [f"{n}.{i}" for n, i in p.targets],
            }
            for name, p in sorted(spec.params.items())
        },
    }


def parameter_lines(spec: WorkflowSpec) -> list[str]:
    values = defaults(spec)
    lines = []
    for name, param in sorted(spec.params.items()):
        where = ", ".join(f"{n}.{i}" for n, i in param.targets)
        if param.attach:
            node, target, target_input = param.attach
            where = f"a new LoadImage node {node} linked to {target}.{target_input}, when given"
        state = "required" if param.required else f"default {reprlib.repr(values.get(name))}"
        if name == "seed" and not param.required:
            state = "random when not given"
        elif name == "filename_prefix":
            state = "unique per request"
        elif param.attach and not param.required:
            state = "optional"
        lines.append(f"{name} ({param.type}, {state}) -> {where}")
    return lines
