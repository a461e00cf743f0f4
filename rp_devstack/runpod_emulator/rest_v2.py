"""REST API v2 (`/v2/...`) over the same account state as GraphQL.

Every request is checked against RunPod's OpenAPI document (`contract.py`) before it is served:
a body or query the document refuses is a 422 `application/problem+json` whose `errors[]` names
each rejected field (`$.gpu.bogus: additional properties 'bogus' not allowed`); a rule the handler
enforces (exactly one of gpu/cpu, capacity, an unknown volume) is a 400 with a `detail`, as the
createPod documentation describes. Every answer is checked against the document too; an answer
that breaks it becomes a 500 and is recorded in `RunPodEmulator.contract_violations`.

Pods: `status` PROVISIONING (boot delay) -> STARTING (until ComfyUI listens) -> RUNNING, or
EXITED (container died / stopped), ERROR (admin knob), TERMINATED (gone: 404).
`GET /v2/pods/{id}/logs` is a Server-Sent Events stream: the last `tail` lines (system lifecycle
lines and the pod processes' output), then new lines while the pod runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from rp_devstack.local_pods import COMFYUI_PRIVATE_PORT
from rp_devstack.runpod_emulator.catalog import (
    DATACENTER_NAMES,
    DATACENTERS,
    GpuOffer,
    availability_level,
)
from rp_devstack.runpod_emulator.contract import Contract, Operation
from rp_devstack.runpod_emulator.errors import EmulatorError
from rp_devstack.runpod_emulator.state import EmulatedPod, EmulatorState, iso

PROBLEM_JSON = "application/problem+json"
GONE = ("EXITED", "ERROR", "TERMINATED")
ACTIONS = {
    "PROVISIONING": ["stop", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "ERROR": ["start", "terminate"],
    "TERMINATED": [],
}


@dataclass
class Answer:
    status: int
    body: Any = None  # JSON-able; None: no body
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterator[bytes] | None = None  # SSE events, sent chunked


def problem(status: int, detail: str, errors: list[str] | None = None) -> Answer:
    body: dict[str, Any] = {"title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Answer(status, body, PROBLEM_JSON)


def logical_name(op: Operation, body: Any) -> str:
    """The operation name faults and counters use, shared with the GraphQL API."""
    if op.operation_id == "podAction":
        action = body.get("action") if isinstance(body, dict) else None
        return {"terminate": "terminate_pod", "stop": "stop_pod", "start": "start_pod"}.get(
            str(action), "pod_action"
        )
    return {
        "createPod": "create_pod",
        "listPods": "list_pods",
        "getPod": "get_pod",
        "deletePod": "terminate_pod",
        "getPodLogs": "pod_logs",
        "listGpuTypes": "gpu_types",
        "createTemplate": "save_template",
        "updateTemplate": "save_template",
        "listTemplates": "list_templates",
        "listNetworkVolumes": "network_volumes",
    }.get(op.operation_id, op.operation_id)


class RestV2:
    def __init__(self, state: EmulatorState, contract: Contract) -> None:
        self.state = state
        self.contract = contract

    def validate(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer | None:
        errors = self.contract.query_errors(op, query) + self.contract.request_errors(op, body)
        if errors:
            return problem(422, "Request validation failed.", errors)
        return None

    def serve(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        handler = getattr(self, f"_{op.operation_id}", None)
        if handler is None:
            return problem(501, f"{op.operation_id} is not emulated")
        try:
            answer: Answer = handler(op, query, body)
        except EmulatorError as exc:
            return problem(exc.status, exc.message)
        return answer

    # ------------------------------------------------------------------ pods

    def _createPod(
        self, op: Operation, query: dict[str, list[str]], body: dict[str, Any]
    ) -> Answer:
        if ("gpu" in body) == ("cpu" in body):
            return problem(400, "exactly one of gpu or cpu must be set")
        if "cpu" in body:
            return problem(400, "CPU pods are not offered by this emulator; ask for a gpu")
        mounts = body.get("mounts") or {}
        if mounts.get("persistent") and mounts.get("network"):
            return problem(400, "mounts.persistent and mounts.network are mutually exclusive")
        network = (mounts.get("network") or [None])[0]
        persistent = mounts.get("persistent") or {}
        spec: dict[str, Any] = {
            "name": body["name"],
            "imageName": body.get("image"),
            "cloudType": body.get("cloud", "SECURE"),
            "gpuTypeId": body["gpu"]["id"],
            "gpuCount": body["gpu"].get("count", 1),
            "containerDiskInGb": body.get("disk"),
            "dockerArgs": body.get("args"),
            "ports": ",".join(body.get("ports") or []),
            "env": [{"key": k, "value": v} for k, v in (body.get("env") or {}).items()],
            "templateId": body.get("templateId"),
            "dataCenterIds": body.get("dataCenterIds") or [],
        }
        if network:
            spec["networkVolumeId"] = network["volumeId"]
            spec["volumeMountPath"] = network["path"]
        elif persistent:
            spec["volumeInGb"] = persistent["size"]
            spec["volumeMountPath"] = persistent["path"]
        if body.get("templateId") and body["templateId"] not in {
            t["id"] for t in self.state.templates()
        }:
            return problem(404, f"template {body['templateId']} not found")
        pod = self.state.deploy({k: v for k, v in spec.items() if v is not None}, None)
        return Answer(201, pod_view(self.state, pod))

    def _listPods(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        return Answer(200, {"pods": [pod_view(self.state, p) for p in self.state.list_pods()]})

    def _getPod(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        pod = self.state.get_pod(op.path_params["id"])
        if pod is None:
            return problem(404, "pod not found")
        return Answer(200, pod_view(self.state, pod))

    def _deletePod(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        self.state.terminate_pod(op.path_params["id"])
        return Answer(204)

    def _podAction(
        self, op: Operation, query: dict[str, list[str]], body: dict[str, Any]
    ) -> Answer:
        pod = self.state.get_pod(op.path_params["id"])
        if pod is None:
            return problem(404, "pod not found")
        action = body["action"]
        status = self.state.lifecycle(pod)
        if action not in ACTIONS[status]:
            return problem(409, f"action {action} is not valid for a pod in status {status}")
        if action == "terminate":
            self.state.terminate_pod(pod.id)
            return Answer(204)
        if action == "stop":
            pod = self.state.stop_pod(pod.id)
        elif action == "start":
            pod = self.state.resume_pod(pod.id)
        else:  # restart
            self.state.stop_pod(pod.id)
            pod = self.state.resume_pod(pod.id)
        return Answer(200, pod_view(self.state, pod))

    def _getPodLogs(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        pod_id = op.path_params["id"]
        if self.state.get_pod(pod_id) is None:
            return problem(404, "pod not found")
        source = self.contract.query_value(op, query, "source")
        tail = self.contract.query_value(op, query, "tail")
        tail = 100 if tail is None else int(tail)
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        stream = self._log_events(pod_id, source, tail)
        return Answer(200, None, "text/event-stream", headers, stream)

    def _log_events(self, pod_id: str, source: str | None, tail: int) -> Iterator[bytes]:
        everything = self.state.pod_log_lines(pod_id, source)
        seen = len(everything)
        sequence = 0

        def event(src: str, line: str) -> bytes:
            nonlocal sequence
            sequence += 1
            ts = iso(time.time())
            data = json.dumps({"ts": ts, "source": src, "line": line})
            return f"id: {ts}/{sequence:012d}\ndata: {data}\n\n".encode()

        for src, line in everything[-tail:] if tail else []:
            yield event(src, line)
        # Then follow while the pod runs; a comment line each second notices a gone client.
        while True:
            pod = self.state.get_pod(pod_id)
            try:
                current = self.state.pod_log_lines(pod_id, source)
            except EmulatorError:
                return
            for src, line in current[seen:]:
                yield event(src, line)
            seen = len(current)
            if pod is None or self.state.lifecycle(pod) in GONE:
                return
            yield b": keep-alive\n\n"
            time.sleep(1.0)

    # ------------------------------------------------------------------ catalog, volumes

    def _listGpuTypes(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        include = self.contract.query_value(op, query, "include") or []
        product = self.contract.query_value(op, query, "product") or []
        if bool(include) != bool(product):
            return problem(400, "product is required with include=AVAILABILITY, and only with it")
        for name in ("count", "cloud", "countryCodes", "cudaVersions", "minCudaVersion"):
            if name in query and not include:
                return problem(400, f"{name} is valid only with include=AVAILABILITY")
        wanted = int(self.contract.query_value(op, query, "count") or 1)
        gpus = [
            gpu_type_view(self.state, g, bool(include), wanted) for g in self.state.gpu_offers()
        ]
        return Answer(200, {"gpus": gpus})

    def _listNetworkVolumes(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        volumes = [
            {
                "id": v.id,
                "name": v.name,
                "size": max(v.size, 10),
                "dataCenter": v.datacenter,
                "type": "STANDARD",
            }
            for v in self.state.network_volumes()
        ]
        return Answer(200, {"networkVolumes": volumes})

    # ------------------------------------------------------------------ templates

    def _listTemplates(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        return Answer(200, {"templates": [template_view(t) for t in self.state.templates()]})

    def _createTemplate(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        saved = self.state.save_template(_template_spec(body, defaults=True))
        return Answer(201, template_view(saved))

    def _updateTemplate(self, op: Operation, query: dict[str, list[str]], body: Any) -> Answer:
        template_id = op.path_params["id"]
        current = {t["id"]: t for t in self.state.templates()}.get(template_id)
        if current is None:
            return problem(404, f"template {template_id} not found")
        saved = self.state.save_template({**current, **_template_spec(body, defaults=False)})
        return Answer(200, template_view(saved))


# ---------------------------------------------------------------------- views


def pod_view(state: EmulatorState, pod: EmulatedPod) -> dict[str, Any]:
    status = state.lifecycle(pod)
    spec = pod.spec
    volume = pod.volume
    mount_path = spec.get("volumeMountPath") or "/workspace"
    mounts: dict[str, Any] = {}
    if volume is not None:
        mounts["network"] = [{"volumeId": volume.id, "path": mount_path}]
    elif int(spec.get("volumeInGb") or 0) >= 10:
        mounts["persistent"] = {"size": int(spec["volumeInGb"]), "path": mount_path}
    ports = [p for p in (spec.get("ports") or "").split(",") if p]
    runtime = None
    if status == "RUNNING":
        port = state.comfy_port(pod)
        mapped = [
            {"private": COMFYUI_PRIVATE_PORT, "public": port, "type": "http", "ip": "127.0.0.1"}
            for p in ports
            if p == f"{COMFYUI_PRIVATE_PORT}/http" and port is not None
        ]
        runtime = {
            "uptime": int(time.time() - (pod.running_since or time.time())),
            "gpus": [{"util": 0, "memoryUtil": 0} for _ in range(spec["gpuCount"])],
            "cpu": {"util": 1},
            "memory": {"util": 2},
            "ports": mapped,
        }
    return {
        "id": pod.id,
        "name": pod.name,
        "status": status,
        "actions": list(ACTIONS[status]),
        "image": pod.image,
        "args": spec.get("dockerArgs") or "",
        "disk": int(spec.get("containerDiskInGb") or 20),
        "mounts": mounts,
        "ports": ports,
        "env": dict(pod.env),  # secret references stay unresolved, as RunPod shows them
        "registry": None,
        "gpu": {"id": pod.gpu.id, "count": spec["gpuCount"]},
        "cloud": "COMMUNITY" if spec.get("cloudType") == "COMMUNITY" else "SECURE",
        "dataCenterId": pod.datacenter,
        "cudaVersion": "12.8",
        "ssh": {
            "proxy": {
                "host": "ssh.runpod.io",
                "port": 22,
                "username": f"{pod.id}-64410a1c",
                "command": f"ssh {pod.id}-64410a1c@ssh.runpod.io",
            },
            "direct": None,
        },
        "template": None,  # a created pod keeps no link to its template
        "cost": 0.0 if status in GONE else pod.cost_per_hr,
        "locked": False,
        "globalNetworking": {"enabled": False},
        "runtime": runtime,
        "createdAt": iso(pod.created_at),
        "startedAt": iso(pod.running_since) if pod.running_since else None,
    }


def gpu_type_view(
    state: EmulatorState, gpu: GpuOffer, availability: bool, wanted: int
) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": gpu.id,
        "name": gpu.display_name,
        "pool": None,
        "manufacturer": "NVIDIA",
        "memory": gpu.memory_gb,
        "secure": True,
        "community": True,
        "price": {"secure": gpu.secure_price, "community": gpu.community_price},
        "maxCount": {"secure": 8, "community": 8},
    }
    if availability:
        levels = {dc: availability_level(state.free_gpus(gpu.id, dc), wanted) for dc in DATACENTERS}
        offered = [
            {"id": dc, "name": DATACENTER_NAMES[dc], "availability": level}
            for dc, level in levels.items()
            if level != "NONE"
        ]
        rank = ["NONE", "LOW", "MEDIUM", "HIGH"]
        view["availability"] = max(levels.values(), key=rank.index)
        if offered:  # omitted entirely when the configuration is unavailable everywhere
            view["dataCenters"] = offered
    return view


def template_view(t: dict[str, Any]) -> dict[str, Any]:
    size = int(t.get("volumeInGb") or 0)
    mounts = {"persistent": {"size": size, "path": t.get("volumeMountPath") or "/workspace"}}
    return {
        "id": t["id"],
        "name": t["name"],
        "image": t.get("imageName") or "",
        "args": t.get("dockerArgs") or "",
        "disk": int(t.get("containerDiskInGb") or 10),
        "mounts": mounts if size >= 10 else {},
        "ports": [p for p in (t.get("ports") or "").split(",") if p],
        "env": {e["key"]: e.get("value") or "" for e in t.get("env") or []},
        "registry": t.get("containerRegistryAuthId") or None,
        "serverless": bool(t.get("isServerless")),
        "public": bool(t.get("isPublic")),
        "category": t.get("category") or "NVIDIA",
        "startSsh": bool(t.get("startSsh")),
        "startJupyter": bool(t.get("startJupyter")),
        "allowedCudaVersions": list(t.get("allowedCudaVersions") or []),
    }


def _template_spec(body: dict[str, Any], *, defaults: bool) -> dict[str, Any]:
    """A v2 template body in the account's (GraphQL-shaped) template fields."""
    persistent = (body.get("mounts") or {}).get("persistent")
    spec: dict[str, Any] = {
        "name": body.get("name"),
        "imageName": body.get("image"),
        "dockerArgs": body.get("args"),
        "containerDiskInGb": body.get("disk"),
        "ports": ",".join(body["ports"]) if "ports" in body else None,
        "env": [{"key": k, "value": v} for k, v in body["env"].items()] if "env" in body else None,
        "containerRegistryAuthId": body.get("registry"),
        "isServerless": body.get("serverless", False if defaults else None),
        "isPublic": body.get("public", False if defaults else None),
        "category": body.get("category", "NVIDIA" if defaults else None),
        "startSsh": body.get("startSsh", True if defaults else None),
        "startJupyter": body.get("startJupyter", True if defaults else None),
        "allowedCudaVersions": body.get("allowedCudaVersions"),
    }
    if persistent:
        spec["volumeInGb"] = persistent["size"]
        spec["volumeMountPath"] = persistent["path"]
    return {k: v for k, v in spec.items() if v is not None}
