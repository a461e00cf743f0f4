"""The GraphQL API (`POST /graphql`) the `runpod` SDK and our GraphQL backend speak.

Wire behaviour copied from RunPod and the SDK (`runpod/api/graphql.py`): errors are HTTP 200 with
`errors[0].message` (the SDK raises `QueryError`); an unknown pod is `pod: null`. Documents are
parsed and validated against a schema (graphql-core) holding the fields the SDK and
`rp_pipeline.integrations.runpod.backend` ask for, so a typo in a query fails here as it would there.
"""

from __future__ import annotations

import time
from typing import Any

from graphql import GraphQLError, build_schema, graphql_sync, parse
from graphql.language import OperationDefinitionNode

from rp_devstack.local_pods import COMFYUI_PRIVATE_PORT
from rp_devstack.runpod_emulator.catalog import DATACENTERS, GpuOffer, stock_status
from rp_devstack.runpod_emulator.state import EmulatedPod, EmulatorState, iso

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


def execute(state: EmulatorState, query: str, variables: dict[str, Any] | None) -> dict[str, Any]:
    result = graphql_sync(SCHEMA, query, root_value=_Root(state), variable_values=variables)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [{"message": e.message, "path": e.path} for e in result.errors]
    return body


def execute_for_pod(
    state: EmulatorState, pod_id: str, query: str, variables: dict[str, Any] | None
) -> dict[str, Any]:
    """A request made with a pod's own key: only that pod, only read/stop/terminate."""
    root = _PodScopedRoot(state, pod_id)
    result = graphql_sync(SCHEMA, query, root_value=root, variable_values=variables)
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [{"message": e.message, "path": e.path} for e in result.errors]
    return body


_LOGICAL = {
    "pod": "get_pod",
    "gpuTypes": "gpu_types",
    "podFindAndDeployOnDemand": "create_pod",
    "podRentInterruptable": "create_pod",
    "podTerminate": "terminate_pod",
    "podStop": "stop_pod",
    "podResume": "start_pod",
    "saveTemplate": "save_template",
}
_MYSELF = {
    "pods": "list_pods",
    "networkVolumes": "network_volumes",
    "podTemplates": "list_templates",
}


def operation_names(query: str) -> tuple[str | None, str | None]:
    """(root field, logical name): `("podFindAndDeployOnDemand", "create_pod")`,
    `("myself", "list_pods")`... what faults target."""
    try:
        document = parse(query)
    except GraphQLError:
        return None, None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            for selection in definition.selection_set.selections:
                name = getattr(selection, "name", None)
                if name is None:
                    continue
                root = str(name.value)
                if root == "myself":
                    inner = getattr(selection, "selection_set", None)
                    fields = [getattr(s, "name", None) for s in (inner.selections if inner else [])]
                    for field in fields:
                        if field is not None and field.value in _MYSELF:
                            return root, _MYSELF[field.value]
                return root, _LOGICAL.get(root)
    return None, None


class _Root:
    """GraphQL root: graphql-core calls these with (info, **arguments)."""

    def __init__(self, state: EmulatorState) -> None:
        self.e = state

    def myself(self, _info: Any) -> dict[str, Any]:
        pods = [pod_view(self.e, p) for p in self.e.list_pods()]
        return {
            "id": "user_devstack",
            "pubKey": "",
            "email": "devstack@localhost",
            "clientBalance": 100.0,
            "currentSpendPerHr": sum(p["costPerHr"] for p in pods),
            "pods": lambda _i: [pod_view(self.e, p) for p in self.e.list_pods()],
            "networkVolumes": lambda _i: [
                {"id": v.id, "name": v.name, "size": v.size, "dataCenterId": v.datacenter}
                for v in self.e.network_volumes()
            ],
            "podTemplates": lambda _i: self.e.templates(),
        }

    def pod(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        pod = self.e.get_pod((input or {}).get("podId", ""))
        return pod_view(self.e, pod) if pod else None

    def gpuTypes(self, _info: Any, input: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        gpu_id = (input or {}).get("id")
        return [
            gpu_view(self.e, g) for g in self.e.gpu_offers() if gpu_id is None or g.id == gpu_id
        ]

    def podFindAndDeployOnDemand(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return pod_view(self.e, self.e.deploy(input or {}, bid_per_gpu=None))

    def podRentInterruptable(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return pod_view(self.e, self.e.deploy(input, bid_per_gpu=float(input["bidPerGpu"])))

    def podStop(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return pod_view(self.e, self.e.stop_pod(input["podId"]))

    def podResume(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return pod_view(self.e, self.e.resume_pod(input["podId"]))

    def podTerminate(self, _info: Any, input: dict[str, Any]) -> None:
        self.e.terminate_pod(input["podId"])

    def saveTemplate(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return self.e.save_template(input)


class _PodScopedRoot:
    """GraphQL root for a pod-scoped key: its own pod's read, stop and terminate, nothing else."""

    def __init__(self, state: EmulatorState, pod_id: str) -> None:
        self.e = state
        self.pod_id = pod_id

    def _own(self, input: dict[str, Any] | None) -> str:
        if (input or {}).get("podId") != self.pod_id:
            raise GraphQLError(f"this API key is limited to pod {self.pod_id}")
        return self.pod_id

    def pod(self, _info: Any, input: dict[str, Any] | None = None) -> dict[str, Any] | None:
        pod = self.e.get_pod(self._own(input))
        return pod_view(self.e, pod) if pod else None

    def podStop(self, _info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return pod_view(self.e, self.e.stop_pod(self._own(input)))

    def podTerminate(self, _info: Any, input: dict[str, Any]) -> None:
        self.e.terminate_pod(self._own(input))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise GraphQLError(f"this API key is limited to pod {self.pod_id}: {name} not allowed")


def _runtime(state: EmulatorState, pod: EmulatedPod) -> dict[str, Any] | None:
    """Null through the boot delay and until ComfyUI listens; then ports map 8188 locally."""
    port = state.comfy_port(pod)
    if port is None:
        return None
    ports = []
    if f"{COMFYUI_PRIVATE_PORT}/http" in (pod.spec.get("ports") or ""):
        ports.append(
            {
                "ip": "127.0.0.1",
                "isIpPublic": True,
                "privatePort": COMFYUI_PRIVATE_PORT,
                "publicPort": port,
                "type": "http",
            }
        )
    return {
        "uptimeInSeconds": int(time.time() - (pod.running_since or time.time())),
        "ports": ports,
        "gpus": [{"id": f"GPU-{pod.id}", "gpuUtilPercent": 0.0, "memoryUtilPercent": 0.0}],
        "container": {"cpuPercent": 1.0, "memoryPercent": 2.0},
    }


def pod_view(state: EmulatorState, pod: EmulatedPod) -> dict[str, Any]:
    spec = pod.spec
    volume = pod.volume
    return {
        "id": pod.id,
        "name": pod.name,
        "imageName": pod.image,
        # GraphQL has no ERROR: a container that cannot recover shows as exited.
        "desiredStatus": "EXITED" if pod.status == "ERROR" else pod.status,
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
        "lastStatusChange": f"{pod.status} by emulator: {iso(pod.status_changed_at)}",
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
        "runtime": _runtime(state, pod),
    }


def gpu_view(state: EmulatorState, gpu: GpuOffer) -> dict[str, Any]:
    def lowest_price(_info: Any, input: dict[str, Any] | None = None) -> dict[str, Any]:
        args = input or {}
        want = int(args.get("gpuCount") or 1)
        dcs = [args["dataCenterId"]] if args.get("dataCenterId") else list(DATACENTERS)
        free = max(state.free_gpus(gpu.id, dc) for dc in dcs)
        price = gpu.secure_price if args.get("secureCloud") else gpu.community_price
        return {
            "gpuName": gpu.display_name,
            "gpuTypeId": gpu.id,
            "minimumBidPrice": gpu.spot_price * want,
            "uninterruptablePrice": price * want,
            "stockStatus": stock_status(free),
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
