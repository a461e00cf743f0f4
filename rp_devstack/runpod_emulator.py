"""An offline RunPod: the GraphQL API the `runpod` SDK and our client speak, with pods as processes.

Wire behaviour copied from RunPod and the SDK (`runpod/api/graphql.py`):
- `POST {base}/graphql` with `{"query": ...}`; the key arrives as `Authorization: Bearer KEY`
  (or `?api_key=`); a missing or wrong key is HTTP 401, which the SDK turns into
  `AuthenticationError`.
- Like RunPod, every pod gets `RUNPOD_POD_ID` and a `RUNPOD_API_KEY` good for that pod only
  (here: read, stop or terminate it; anything else is an error naming the limit), plus
  `RUNPOD_API_BASE_URL` pointing here.
- Errors are HTTP 200 with `errors[0].message` (the SDK raises `QueryError`), e.g. RunPod's
  capacity message `There are no longer any instances available ...`; an unknown pod is `pod: null`.
- Documents are parsed and validated against a schema (graphql-core) holding the fields the SDK
  and `rp_pipeline.resources.runpod` ask for, so a typo in a query fails here as it would there.

Pods: `desiredStatus` RUNNING from creation; `runtime` stays null through a boot delay and until
the pod's ComfyUI listens; then `runtime.ports` maps 8188 to the real local port (isIpPublic true).
podStop -> EXITED, podResume -> RUNNING (boot again), podTerminate -> gone (`pod: null`).

Admin API (no auth, loopback only) under `/_emulator/`, mirrored by methods on `RunPodEmulator`
and on `EmulatorAdmin` (an HTTP handle for other processes):
  GET  /_emulator/pods        every pod incl. terminated, with uptime and cost
  GET  /_emulator/billing     {"total_cost": .., "pods": [{id, name, cost_per_hr, seconds, cost}]}
  POST /_emulator/faults      {"count": N, "mode": "5xx"|"hang", "operation": opt, "hang_seconds": s}
  POST /_emulator/stock       {"gpu_type_id": .., "count": N, "datacenter": opt}
  POST /_emulator/pods/<id>/crash
  POST /_emulator/boot_delay  {"seconds": s}
  POST /_emulator/reset       terminate every pod, clear faults, restore stock
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import re
import secrets
import signal
import string
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from graphql import GraphQLError, build_schema, graphql_sync, parse
from graphql.language import OperationDefinitionNode

from rp_devstack.local_pods import COMFYUI_PRIVATE_PORT, ComfyCommand, LocalPod, standin_command

log = logging.getLogger(__name__)

CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
DEFAULT_API_KEY = "devstack-runpod-key"
DATACENTERS = ("EU-RO-1", "US-KS-2")


@dataclass(frozen=True)
class GpuOffer:
    id: str
    display_name: str
    memory_gb: int
    secure_price: float

    @property
    def community_price(self) -> float:
        return round(self.secure_price * 0.8, 2)

    @property
    def spot_price(self) -> float:
        return round(self.secure_price * 0.5, 2)


GPU_CATALOG = (
    GpuOffer("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69),
    GpuOffer("NVIDIA RTX A6000", "RTX A6000", 48, 0.79),
    GpuOffer("NVIDIA L40S", "L40S", 48, 0.99),
    GpuOffer("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64),
    GpuOffer("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99),
)

SCHEMA = build_schema(
    """
    enum CloudTypeEnum { ALL SECURE COMMUNITY }

    type Query {
      myself: User
      pod(input: PodFilter): Pod
      gpuTypes(input: GpuTypeFilter): [GpuType]
    }

    type Mutation {
      podFindAndDeployOnDemand(input: PodFindAndDeployOnDemandInput): Pod
      podRentInterruptable(input: PodRentInterruptableInput!): Pod
      podStop(input: PodStopInput!): Pod
      podResume(input: PodResumeInput!): Pod
      podTerminate(input: PodTerminateInput): Boolean
      saveTemplate(input: SaveTemplateInput): PodTemplate
    }

    input PodFilter { podId: String! }
    input GpuTypeFilter { id: String }
    input PodStopInput { podId: String!, incrementVersion: Boolean }
    input PodResumeInput { podId: String!, gpuCount: Int }
    input PodTerminateInput { podId: String! }
    input EnvironmentVariableInput { key: String!, value: String }
    input GpuLowestPriceInput {
      gpuCount: Int, dataCenterId: String, secureCloud: Boolean, minMemoryInGb: Int,
      minVcpuCount: Int, countryCode: String, minDownload: Int, minUpload: Int
    }

    input PodFindAndDeployOnDemandInput {
      name: String, imageName: String, cloudType: CloudTypeEnum, startSsh: Boolean,
      startJupyter: Boolean, gpuTypeId: String, gpuTypeIdList: [String], supportPublicIp: Boolean,
      gpuCount: Int, volumeInGb: Int, containerDiskInGb: Int, minVcpuCount: Int,
      minMemoryInGb: Int, allowedCudaVersions: [String], dataCenterId: String, countryCode: String,
      dockerArgs: String, ports: String, volumeMountPath: String,
      env: [EnvironmentVariableInput], templateId: String, networkVolumeId: String,
      minDownload: Int, minUpload: Int, stopAfter: String, terminateAfter: String
    }

    input PodRentInterruptableInput {
      bidPerGpu: Float!, name: String, imageName: String, cloudType: CloudTypeEnum,
      startSsh: Boolean, startJupyter: Boolean, gpuTypeId: String, supportPublicIp: Boolean,
      gpuCount: Int, volumeInGb: Int, containerDiskInGb: Int, minVcpuCount: Int,
      minMemoryInGb: Int, allowedCudaVersions: [String], dataCenterId: String, countryCode: String,
      dockerArgs: String, ports: String, volumeMountPath: String,
      env: [EnvironmentVariableInput], templateId: String, networkVolumeId: String,
      minDownload: Int, minUpload: Int
    }

    input SaveTemplateInput {
      id: String, name: String!, imageName: String!, dockerArgs: String, containerDiskInGb: Int,
      volumeInGb: Int, volumeMountPath: String, ports: String, env: [EnvironmentVariableInput],
      isServerless: Boolean, startSsh: Boolean, startJupyter: Boolean, isPublic: Boolean,
      readme: String, containerRegistryAuthId: String, category: String
    }

    type User {
      id: String
      pubKey: String
      email: String
      clientBalance: Float
      currentSpendPerHr: Float
      pods: [Pod]
      networkVolumes: [NetworkVolume]
      podTemplates: [PodTemplate]
    }

    type NetworkVolume { id: String, name: String, size: Int, dataCenterId: String }

    type EnvironmentVariable { key: String, value: String }

    type PodTemplate {
      id: String, name: String, imageName: String, dockerArgs: String, containerDiskInGb: Int,
      volumeInGb: Int, volumeMountPath: String, ports: String, env: [EnvironmentVariable],
      isServerless: Boolean, startSsh: Boolean, startJupyter: Boolean, isPublic: Boolean,
      readme: String, category: String
    }

    type GpuType {
      id: String, displayName: String, manufacturer: String, memoryInGb: Int, cudaCores: Int,
      secureCloud: Boolean, communityCloud: Boolean, securePrice: Float, communityPrice: Float,
      secureSpotPrice: Float, communitySpotPrice: Float, oneMonthPrice: Float,
      threeMonthPrice: Float, oneWeekPrice: Float, maxGpuCount: Int,
      lowestPrice(input: GpuLowestPriceInput): LowestPrice
    }

    type LowestPrice {
      gpuName: String, gpuTypeId: String, minimumBidPrice: Float, uninterruptablePrice: Float,
      stockStatus: String, maxUnreservedGpuCount: Int, availableGpuCounts: [Int]
    }

    type Pod {
      id: String, name: String, imageName: String, desiredStatus: String, env: [String],
      machineId: String, machine: Machine, costPerHr: Float, adjustedCostPerHr: Float,
      gpuCount: Int, vcpuCount: Float, memoryInGb: Float, containerDiskInGb: Int,
      volumeInGb: Float, volumeMountPath: String, ports: String, port: Int, podType: String,
      lastStatusChange: String, uptimeSeconds: Int, dockerArgs: String, dockerId: String,
      templateId: String, networkVolume: NetworkVolume, runtime: PodRuntime
    }

    type Machine {
      podHostId: String, gpuDisplayName: String, gpuTypeId: String, dataCenterId: String,
      location: String
    }

    type PodRuntime {
      uptimeInSeconds: Int, ports: [PodRuntimePort], gpus: [PodRuntimeGpu],
      container: PodRuntimeContainer
    }

    type PodRuntimePort {
      ip: String, isIpPublic: Boolean, privatePort: Int, publicPort: Int, type: String
    }

    type PodRuntimeGpu { id: String, gpuUtilPercent: Float, memoryUtilPercent: Float }

    type PodRuntimeContainer { cpuPercent: Float, memoryPercent: Float }
    """
)

_SECRET_REF = re.compile(r"\{\{\s*RUNPOD_SECRET_([A-Za-z0-9_.\-]+)\s*\}\}")


@dataclass
class NetworkVolume:
    id: str
    name: str
    size: int
    datacenter: str


@dataclass
class EmulatedPod:
    id: str
    name: str
    image: str
    gpu: GpuOffer
    datacenter: str
    cost_per_hr: float
    pod_type: str  # RESERVED (on-demand) or INTERRUPTABLE (spot)
    env: dict[str, str]
    spec: dict[str, Any]
    created_at: float
    status: str = "RUNNING"
    status_changed_at: float = 0.0
    running_since: float | None = None
    billed_seconds: float = 0.0
    booted_at: float = 0.0  # runtime may appear from this moment (boot delay)
    terminated_at: float | None = None
    local: LocalPod | None = None

    def seconds_running(self, now: float) -> float:
        extra = now - self.running_since if self.running_since is not None else 0.0
        return self.billed_seconds + extra


@dataclass
class Fault:
    mode: str  # "5xx": fail before doing anything; "hang": do it, then answer too late
    operation: str | None
    hang_seconds: float


class RunPodEmulator:
    """The emulator in this process: HTTP server on a thread, pods as child process groups."""

    def __init__(
        self,
        state_dir: str | Path,
        api_key: str = DEFAULT_API_KEY,
        *,
        port: int = 0,
        boot_delay_s: float = 1.0,
        stock_per_datacenter: int = 8,
        secrets_store: dict[str, str] | None = None,
        comfy_command: ComfyCommand = standin_command,
        agent_grace_s: float = 15.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._api_key = api_key
        self._port = port
        self.boot_delay_s = boot_delay_s
        self.comfy_command = comfy_command
        self.agent_grace_s = agent_grace_s
        self.default_stock = stock_per_datacenter
        self._secrets: dict[str, str] = dict(secrets_store or {})
        self._lock = threading.RLock()
        self._pods: dict[str, EmulatedPod] = {}
        self._volumes: dict[str, NetworkVolume] = {}
        self._templates: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._pod_keys: dict[str, str] = {}  # pod-scoped API key -> pod id
        self._stock: dict[tuple[str, str], int] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.reset_stock()

    def __repr__(self) -> str:  # the key stays out of reprs
        return f"RunPodEmulator(base_url={self.base_url!r}, pods={len(self._pods)})"

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        if self._server is None:
            return "(not started)"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def api_key(self) -> str:
        return self._api_key

    def start(self) -> RunPodEmulator:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="runpod-emulator", daemon=True
        )
        self._thread.start()
        atexit.register(self.stop)
        log.info("RunPod emulator on %s (state %s)", self.base_url, self.state_dir)
        return self

    def stop(self) -> None:
        """Stop the server and every pod process. Safe to call twice (atexit calls it too)."""
        with self._lock:
            live = [p for p in self._pods.values() if p.local is not None]
            for pod in live:
                self._halt(pod, "TERMINATED")
        self._stop_all(live)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---------------------------------------------------------------- setup and admin

    def add_secret(self, name: str, value: str) -> None:
        with self._lock:
            self._secrets[name] = value

    def add_network_volume(
        self, volume_id: str, name: str, datacenter: str = "EU-RO-1", size_gb: int = 100
    ) -> None:
        with self._lock:
            self._volumes[volume_id] = NetworkVolume(volume_id, name, size_gb, datacenter)

    def reset_stock(self) -> None:
        with self._lock:
            self._stock = {
                (g.id, dc): self.default_stock for g in GPU_CATALOG for dc in DATACENTERS
            }

    def set_stock(self, gpu_type_id: str, count: int, datacenter: str | None = None) -> None:
        with self._lock:
            for dc in [datacenter] if datacenter else DATACENTERS:
                self._stock[(gpu_type_id, dc)] = count

    def set_boot_delay(self, seconds: float) -> None:
        self.boot_delay_s = seconds

    def fail_next(
        self, count: int = 1, mode: str = "5xx", operation: str | None = None, hang_seconds=5.0
    ) -> None:
        """The next `count` GraphQL calls (of `operation`, if given) fail: "5xx" answers 502
        with an HTML body before doing anything; "hang" does the work, then answers only after
        `hang_seconds` (a lost response: the client times out although the call took effect)."""
        if mode not in {"5xx", "hang"}:
            raise ValueError(f"unknown fault mode {mode!r}; use '5xx' or 'hang'")
        with self._lock:
            self._faults.extend(Fault(mode, operation, hang_seconds) for _ in range(count))

    def crash_pod(self, pod_id: str) -> None:
        """The pod's container dies: processes killed at once, desiredStatus EXITED."""
        with self._lock:
            pod = self._pods[pod_id]
            self._halt(pod, "EXITED")
            local, pod.local = pod.local, None
        if local is not None:
            local.kill()

    def pods(self, include_terminated: bool = True) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [
                self._admin_view(p, now)
                for p in self._pods.values()
                if include_terminated or p.status != "TERMINATED"
            ]

    def billing(self) -> dict[str, Any]:
        rows = self.pods()
        return {"total_cost": round(sum(r["cost"] for r in rows), 6), "pods": rows}

    def local_pod(self, pod_id: str) -> LocalPod | None:
        with self._lock:
            return self._pods[pod_id].local

    def reset(self) -> None:
        with self._lock:
            live = [p for p in self._pods.values() if p.status != "TERMINATED"]
            for pod in live:
                self._halt(pod, "TERMINATED")
            self._faults.clear()
        self._stop_all(live)
        self.reset_stock()

    # ---------------------------------------------------------------- request handling

    def authorized(self, header: str | None, query_key: str | None) -> bool:
        presented = _presented_key(header, query_key)
        return bool(presented) and secrets.compare_digest(presented or "", self._api_key)

    def pod_scope(self, header: str | None, query_key: str | None) -> str | None:
        """The pod a pod-scoped key belongs to, or None when it is not one."""
        presented = _presented_key(header, query_key) or ""
        with self._lock:
            for key, pod_id in self._pod_keys.items():
                if secrets.compare_digest(presented, key):
                    return pod_id
        return None

    def execute_for_pod(
        self, pod_id: str, query: str, variables: dict[str, Any] | None
    ) -> dict[str, Any]:
        """A request made with a pod's own key: only that pod, only read/stop/terminate."""
        result = graphql_sync(
            SCHEMA, query, root_value=_PodScopedRoot(self, pod_id), variable_values=variables
        )
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [{"message": e.message, "path": e.path} for e in result.errors]
        return body

    def take_fault(self, operation: str | None) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.operation is None or fault.operation == operation:
                    return self._faults.pop(i)
        return None

    def execute(self, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
        result = graphql_sync(SCHEMA, query, root_value=_Root(self), variable_values=variables)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [{"message": e.message, "path": e.path} for e in result.errors]
        return body

    # ---------------------------------------------------------------- the RunPod model

    def deploy(self, spec: dict[str, Any], bid_per_gpu: float | None) -> dict[str, Any]:
        spec = self._apply_template(spec)
        if not spec.get("imageName"):
            raise GraphQLError("imageName or templateId is required")
        gpu = _gpu_offer(spec.get("gpuTypeId"))
        gpu_count = int(spec.get("gpuCount") or 1)
        cloud = spec.get("cloudType") or "ALL"
        datacenter = spec.get("dataCenterId")
        volume = None
        if spec.get("networkVolumeId"):
            volume = self._volumes.get(spec["networkVolumeId"])
            if volume is None:
                raise GraphQLError(f"Network volume {spec['networkVolumeId']} not found")
            if cloud == "COMMUNITY":
                raise GraphQLError("Network volumes are only available on Secure Cloud")
            if datacenter and datacenter != volume.datacenter:
                raise GraphQLError(f"Network volume is in {volume.datacenter}, not in {datacenter}")
            datacenter = volume.datacenter
        if bid_per_gpu is not None and bid_per_gpu < gpu.spot_price:
            raise GraphQLError(
                f"Your bid price is too low; the minimum bid for {gpu.display_name} "
                f"is ${gpu.spot_price:.2f}/hr"
            )
        env = {e["key"]: e.get("value") or "" for e in spec.get("env") or []}
        with self._lock:
            chosen = self._take_stock(gpu.id, gpu_count, datacenter)
            now = time.time()
            price = bid_per_gpu if bid_per_gpu is not None else _on_demand_price(gpu, cloud)
            pod = EmulatedPod(
                id=_pod_id(),
                name=spec.get("name") or "",
                image=spec["imageName"],
                gpu=gpu,
                datacenter=chosen,
                cost_per_hr=round(price * gpu_count, 4),
                pod_type="INTERRUPTABLE" if bid_per_gpu is not None else "RESERVED",
                env=env,
                spec={**spec, "gpuCount": gpu_count, "networkVolume": volume},
                created_at=now,
            )
            self._pods[pod.id] = pod
            self._run(pod)
            log.info("pod %s (%s) deployed on %s in %s", pod.id, pod.name, gpu.id, chosen)
            return self._pod_view(pod)

    def get_pod(self, pod_id: str) -> dict[str, Any] | None:
        with self._lock:
            pod = self._pods.get(pod_id)
            if pod is None or pod.status == "TERMINATED":
                return None
            return self._pod_view(pod)

    def list_pods(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._pod_view(p) for p in self._pods.values() if p.status != "TERMINATED"]

    def stop_pod(self, pod_id: str) -> dict[str, Any]:
        with self._lock:
            pod = self._require(pod_id)
            self._halt(pod, "EXITED")
        self._stop_processes(pod)
        with self._lock:
            return self._pod_view(pod)

    def resume_pod(self, pod_id: str) -> dict[str, Any]:
        with self._lock:
            pod = self._require(pod_id)
            if pod.status != "RUNNING":
                self._take_stock(pod.gpu.id, pod.spec["gpuCount"], pod.datacenter)
                self._run(pod)
            return self._pod_view(pod)

    def terminate_pod(self, pod_id: str) -> None:
        with self._lock:
            pod = self._require(pod_id)
            self._halt(pod, "TERMINATED")
        self._stop_processes(pod)
        log.info("pod %s terminated", pod_id)

    def save_template(self, spec: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            template_id = spec.get("id")
            clash = [
                t
                for t in self._templates.values()
                if t["name"] == spec["name"] and t["id"] != template_id
            ]
            if clash:
                raise GraphQLError("Template name must be unique")
            if template_id and template_id not in self._templates:
                raise GraphQLError(f"Template {template_id} not found")
            template_id = template_id or _pod_id()[:10]
            template = {
                "containerDiskInGb": 10,
                "volumeInGb": 0,
                "volumeMountPath": "/workspace",
                "ports": "",
                "dockerArgs": "",
                "isServerless": False,
                "startSsh": True,
                "startJupyter": False,
                "isPublic": False,
                "readme": "",
                "category": "NVIDIA",
                **{k: v for k, v in spec.items() if v is not None},
                "env": [dict(e) for e in spec.get("env") or []],
                "id": template_id,
            }
            self._templates[template_id] = template
            return dict(template)

    def templates(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(t) for t in self._templates.values()]

    def network_volumes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"id": v.id, "name": v.name, "size": v.size, "dataCenterId": v.datacenter}
                for v in self._volumes.values()
            ]

    def gpu_types(self, gpu_id: str | None) -> list[dict[str, Any]]:
        return [self._gpu_view(g) for g in GPU_CATALOG if gpu_id is None or g.id == gpu_id]

    # ---------------------------------------------------------------- internals

    def _require(self, pod_id: str) -> EmulatedPod:
        pod = self._pods.get(pod_id)
        if pod is None or pod.status == "TERMINATED":
            raise GraphQLError("pod not found")
        return pod

    def _apply_template(self, spec: dict[str, Any]) -> dict[str, Any]:
        template_id = spec.get("templateId")
        if not template_id:
            return spec
        template = self._templates.get(template_id)
        if template is None:
            raise GraphQLError(f"Template {template_id} not found")
        merged = {
            k: template.get(k) for k in ("imageName", "dockerArgs", "ports", "volumeMountPath")
        }
        merged["env"] = template.get("env") or []
        merged.update({k: v for k, v in spec.items() if v not in (None, "", [])})
        if spec.get("env") and template.get("env"):
            # Pod env overrides the template's, key by key (as RunPod merges them).
            keyed = {e["key"]: e for e in template["env"]}
            keyed.update({e["key"]: e for e in spec["env"]})
            merged["env"] = list(keyed.values())
        return merged

    def _take_stock(self, gpu_id: str, count: int, datacenter: str | None) -> str:
        candidates = [datacenter] if datacenter else list(DATACENTERS)
        best = max(candidates, key=lambda dc: self._stock.get((gpu_id, dc), 0))
        if self._stock.get((gpu_id, best), 0) < count:
            raise GraphQLError(CAPACITY_MESSAGE)
        self._stock[(gpu_id, best)] -= count
        return best

    def _run(self, pod: EmulatedPod) -> None:
        """Start (or restart) the pod's processes. Called with the lock held."""
        now = time.time()
        pod.status = "RUNNING"
        pod.status_changed_at = now
        pod.running_since = now
        pod.booted_at = now + self.boot_delay_s
        pod_key = next((k for k, p in self._pod_keys.items() if p == pod.id), None)
        if pod_key is None:
            pod_key = f"pod-{pod.id}-{secrets.token_urlsafe(24)}"
            self._pod_keys[pod_key] = pod.id
        pod.local = LocalPod(
            pod_id=pod.id,
            root=self.state_dir / "pods" / pod.id,
            env=self._resolve_secrets(pod.env),
            comfy_command=self.comfy_command,
            agent_grace_s=self.agent_grace_s,
            api_base_url=self.base_url,
            api_key=pod_key,
        )
        try:
            pod.local.start()
        except Exception:
            pod.local.stop()
            pod.local = None
            self._halt(pod, "EXITED")
            raise

    def _halt(self, pod: EmulatedPod, status: str) -> None:
        """Stop billing and give GPUs back; processes are stopped by the caller, off the lock."""
        now = time.time()
        if pod.running_since is not None:
            pod.billed_seconds += now - pod.running_since
            pod.running_since = None
            self._stock[(pod.gpu.id, pod.datacenter)] += pod.spec["gpuCount"]
        pod.status = status
        pod.status_changed_at = now
        if status == "TERMINATED":
            pod.terminated_at = now

    def _stop_processes(self, pod: EmulatedPod) -> None:
        with self._lock:
            local, pod.local = pod.local, None
        if local is not None:
            local.stop()

    def _stop_all(self, pods: list[EmulatedPod]) -> None:
        """Stop pods side by side: each agent may take its grace period to flush."""
        threads = [threading.Thread(target=self._stop_processes, args=(p,)) for p in pods]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _resolve_secrets(self, env: dict[str, str]) -> dict[str, str]:
        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self._secrets:
                log.warning("pod env refers to unknown secret %s; it resolves to ''", name)
            return self._secrets.get(name, "")

        return {k: _SECRET_REF.sub(lookup, v) for k, v in env.items()}

    def _runtime(self, pod: EmulatedPod) -> dict[str, Any] | None:
        local = pod.local
        if pod.status != "RUNNING" or local is None:
            return None
        if local.comfy_exited():
            # The container's main process died: RunPod shows the pod as exited.
            self._halt(pod, "EXITED")
            pod.local = None
            threading.Thread(target=local.stop, daemon=True).start()
            return None
        if time.time() < pod.booted_at or not local.comfy_listening():
            return None
        ports = []
        if f"{COMFYUI_PRIVATE_PORT}/http" in (pod.spec.get("ports") or ""):
            ports.append(
                {
                    "ip": "127.0.0.1",
                    "isIpPublic": True,
                    "privatePort": COMFYUI_PRIVATE_PORT,
                    "publicPort": local.comfy_port,
                    "type": "http",
                }
            )
        return {
            "uptimeInSeconds": int(time.time() - (pod.running_since or time.time())),
            "ports": ports,
            "gpus": [{"id": f"GPU-{pod.id}", "gpuUtilPercent": 0.0, "memoryUtilPercent": 0.0}],
            "container": {"cpuPercent": 1.0, "memoryPercent": 2.0},
        }

    def _pod_view(self, pod: EmulatedPod) -> dict[str, Any]:
        spec = pod.spec
        volume: NetworkVolume | None = spec.get("networkVolume")
        return {
            "id": pod.id,
            "name": pod.name,
            "imageName": pod.image,
            "desiredStatus": pod.status,
            "env": [f"{k}={v}" for k, v in pod.env.items()],  # references stay unresolved
            "machineId": f"m-{pod.id[:8]}",
            "machine": {
                "podHostId": f"{pod.id}-64410a1c",
                "gpuDisplayName": pod.gpu.display_name,
                "gpuTypeId": pod.gpu.id,
                "dataCenterId": pod.datacenter,
                "location": pod.datacenter,
            },
            "costPerHr": pod.cost_per_hr,
            "adjustedCostPerHr": pod.cost_per_hr,
            "gpuCount": spec["gpuCount"],
            "vcpuCount": float(max(spec.get("minVcpuCount") or 8, 8)),
            "memoryInGb": float(max(spec.get("minMemoryInGb") or 31, 31)),
            "containerDiskInGb": spec.get("containerDiskInGb") or 20,
            "volumeInGb": float(volume.size if volume else spec.get("volumeInGb") or 0),
            "volumeMountPath": spec.get("volumeMountPath") or "/workspace",
            "ports": spec.get("ports") or "",
            "port": None,
            "podType": pod.pod_type,
            "lastStatusChange": f"{pod.status} by emulator: {_iso(pod.status_changed_at)}",
            "uptimeSeconds": int(pod.seconds_running(time.time())),
            "dockerArgs": spec.get("dockerArgs") or "",
            "dockerId": None,
            "templateId": spec.get("templateId"),
            "networkVolume": (
                {
                    "id": volume.id,
                    "name": volume.name,
                    "size": volume.size,
                    "dataCenterId": volume.datacenter,
                }
                if volume
                else None
            ),
            "runtime": self._runtime(pod),
        }

    def _admin_view(self, pod: EmulatedPod, now: float) -> dict[str, Any]:
        seconds = pod.seconds_running(now)
        return {
            "id": pod.id,
            "name": pod.name,
            "gpu_type_id": pod.gpu.id,
            "datacenter": pod.datacenter,
            "pod_type": pod.pod_type,
            "desired_status": pod.status,
            "cost_per_hr": pod.cost_per_hr,
            "seconds": round(seconds, 3),
            "cost": round(pod.cost_per_hr * seconds / 3600, 6),
            "created_at": pod.created_at,
            "terminated_at": pod.terminated_at,
            "env": dict(pod.env),
            "pids": pod.local.pids() if pod.local else [],
            "root": str(self.state_dir / "pods" / pod.id),
        }

    def _gpu_view(self, gpu: GpuOffer) -> dict[str, Any]:
        def lowest_price(_info: Any, input: dict[str, Any] | None = None) -> dict[str, Any]:
            args = input or {}
            want = int(args.get("gpuCount") or 1)
            dcs = [args["dataCenterId"]] if args.get("dataCenterId") else list(DATACENTERS)
            with self._lock:
                free = max(self._stock.get((gpu.id, dc), 0) for dc in dcs)
            price = gpu.secure_price if args.get("secureCloud") else gpu.community_price
            return {
                "gpuName": gpu.display_name,
                "gpuTypeId": gpu.id,
                "minimumBidPrice": gpu.spot_price * want,
                "uninterruptablePrice": price * want,
                "stockStatus": _stock_status(free),
                "maxUnreservedGpuCount": free,
                "availableGpuCounts": [n for n in (1, 2, 4, 8) if n <= free],
            }

        return {
            "id": gpu.id,
            "displayName": gpu.display_name,
            "manufacturer": "Nvidia",
            "memoryInGb": gpu.memory_gb,
            "cudaCores": 0,
            "secureCloud": True,
            "communityCloud": True,
            "securePrice": gpu.secure_price,
            "communityPrice": gpu.community_price,
            "secureSpotPrice": gpu.spot_price,
            "communitySpotPrice": gpu.spot_price,
            "oneMonthPrice": None,
            "threeMonthPrice": None,
            "oneWeekPrice": None,
            "maxGpuCount": 8,
            "lowestPrice": lowest_price,
        }


class _Root:
    """GraphQL root: graphql-core calls these with (info, **arguments)."""

    def __init__(self, emulator: RunPodEmulator) -> None:
        self.e = emulator

    def myself(self, _info: Any) -> dict[str, Any]:
        return {
            "id": "user_devstack",
            "pubKey": "",
            "email": "devstack@localhost",
            "clientBalance": 100.0,
            "currentSpendPerHr": sum(p["costPerHr"] for p in self.e.list_pods()),
            "pods": lambda _i: self.e.list_pods(),
            "networkVolumes": lambda _i: self.e.network_volumes(),
            "podTemplates": lambda _i: self.e.templates(),
        }

    def pod(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return self.e.get_pod((input or {}).get("podId", ""))

    def gpuTypes(self, _info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.e.gpu_types((input or {}).get("id"))

    def podFindAndDeployOnDemand(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.deploy(input or {}, bid_per_gpu=None)

    def podRentInterruptable(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.deploy(input, bid_per_gpu=float(input["bidPerGpu"]))

    def podStop(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.stop_pod(input["podId"])

    def podResume(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.resume_pod(input["podId"])

    def podTerminate(self, _info: Any, input: dict[str, Any]) -> None:
        self.e.terminate_pod(input["podId"])

    def saveTemplate(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.save_template(input)


class _PodScopedRoot:
    """GraphQL root for a pod-scoped key: its own pod's read, stop and terminate, nothing else."""

    def __init__(self, emulator: RunPodEmulator, pod_id: str) -> None:
        self.e = emulator
        self.pod_id = pod_id

    def _own(self, input: dict[str, Any] | None) -> str:
        pod_id = (input or {}).get("podId")
        if pod_id != self.pod_id:
            raise GraphQLError(f"this API key is limited to pod {self.pod_id}")
        return pod_id

    def pod(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        return self.e.get_pod(self._own(input))

    def podStop(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.stop_pod(self._own(input))

    def podTerminate(self, _info: Any, input: dict[str, Any]) -> None:
        self.e.terminate_pod(self._own(input))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise GraphQLError(f"this API key is limited to pod {self.pod_id}: {name} not allowed")


class _Handler(BaseHTTPRequestHandler):
    emulator: RunPodEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def do_GET(self) -> None:
        path = urlparse(self.path).path
        if path == "/_emulator/pods":
            self._json(200, self.emulator.pods())
        elif path == "/_emulator/billing":
            self._json(200, self.emulator.billing())
        elif path == "/_emulator/health":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path.startswith("/_emulator/"):
            self._admin(url.path, raw)
            return
        if url.path != "/graphql":
            self._json(404, {"error": f"no route {url.path}"})
            return
        query_key = next(iter(parse_qs(url.query).get("api_key", [])), None)
        header = self.headers.get("Authorization")
        scope = None
        if not self.emulator.authorized(header, query_key):
            scope = self.emulator.pod_scope(header, query_key)
            if scope is None:
                self._text(401, "401 Unauthorized")
                return
        try:
            payload = json.loads(raw or b"{}")
            query = payload["query"]
        except (ValueError, KeyError):
            self._json(400, {"errors": [{"message": "Must provide query string."}]})
            return
        fault = self.emulator.take_fault(_operation_name(query))
        if fault and fault.mode == "5xx":
            self._text(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return
        if scope is not None:
            body = self.emulator.execute_for_pod(scope, query, payload.get("variables"))
        else:
            body = self.emulator.execute(query, payload.get("variables"))
        if fault and fault.mode == "hang":
            time.sleep(fault.hang_seconds)
        self._json(200, body)

    def _admin(self, path: str, raw: bytes) -> None:
        e = self.emulator
        args = json.loads(raw or b"{}")
        try:
            if path == "/_emulator/faults":
                e.fail_next(
                    int(args.get("count", 1)),
                    args.get("mode", "5xx"),
                    args.get("operation"),
                    float(args.get("hang_seconds", 5.0)),
                )
            elif path == "/_emulator/stock":
                e.set_stock(args["gpu_type_id"], int(args["count"]), args.get("datacenter"))
            elif path == "/_emulator/boot_delay":
                e.set_boot_delay(float(args["seconds"]))
            elif path == "/_emulator/reset":
                e.reset()
            elif m := re.fullmatch(r"/_emulator/pods/([^/]+)/crash", path):
                e.crash_pod(m.group(1))
            else:
                self._json(404, {"error": f"no route {path}"})
                return
        except (KeyError, ValueError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"ok": True})

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _text(self, status: int, text: str, content_type: str = "text/plain") -> None:
        self._send(status, text.encode(), content_type)

    def _send(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a "hang" fault outlived its timeout)


class EmulatorAdmin:
    """The admin API over HTTP, for tests and tools in another process than the emulator."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}/_emulator/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def pods(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "pods"))

    def billing(self) -> dict[str, Any]:
        return dict(self._call("GET", "billing"))

    def fail_next(
        self, count: int = 1, mode: str = "5xx", operation: str | None = None, hang_seconds=5.0
    ) -> None:
        self._call(
            "POST",
            "faults",
            {"count": count, "mode": mode, "operation": operation, "hang_seconds": hang_seconds},
        )

    def set_stock(self, gpu_type_id: str, count: int, datacenter: str | None = None) -> None:
        self._call(
            "POST", "stock", {"gpu_type_id": gpu_type_id, "count": count, "datacenter": datacenter}
        )

    def crash_pod(self, pod_id: str) -> None:
        self._call("POST", f"pods/{pod_id}/crash", {})

    def set_boot_delay(self, seconds: float) -> None:
        self._call("POST", "boot_delay", {"seconds": seconds})

    def reset(self) -> None:
        self._call("POST", "reset", {})


def _presented_key(header: str | None, query_key: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return query_key


def _operation_name(query: str) -> str | None:
    """The first top-level field (`pod`, `podFindAndDeployOnDemand`...): what faults target."""
    try:
        document = parse(query)
    except GraphQLError:
        return None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for selection in definition.selection_set.selections:
                name = getattr(selection, "name", None)
                if name is not None:
                    return str(name.value)
    return None


def _gpu_offer(gpu_id: str | None) -> GpuOffer:
    for gpu in GPU_CATALOG:
        if gpu.id == gpu_id:
            return gpu
    raise GraphQLError(f"Invalid GPU type: {gpu_id!r}")


def _on_demand_price(gpu: GpuOffer, cloud: str) -> float:
    return gpu.community_price if cloud == "COMMUNITY" else gpu.secure_price


def _stock_status(free: int) -> str | None:
    if free >= 4:
        return "High"
    if free >= 2:
        return "Medium"
    return "Low" if free >= 1 else None


def _pod_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(14))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    """`python -m rp_devstack.runpod_emulator`: the emulator alone, until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Offline RunPod GraphQL API with local pods")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--boot-delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    emulator = RunPodEmulator(
        args.state_dir, args.api_key, port=args.port, boot_delay_s=args.boot_delay
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"RUNPOD_API_BASE_URL={emulator.base_url}", flush=True)
    stop.wait()
    emulator.stop()
    return 0


__all__ = [
    "CAPACITY_MESSAGE",
    "DEFAULT_API_KEY",
    "GPU_CATALOG",
    "EmulatorAdmin",
    "RunPodEmulator",
]

if __name__ == "__main__":
    raise SystemExit(main())
