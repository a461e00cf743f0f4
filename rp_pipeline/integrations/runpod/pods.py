"""What a pod is to the pipeline: the spec to launch (`PodSpec`) and the create request built
from it, the pod as RunPod reports it (`Pod`, `ReadyPod`), its name and its ports."""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from rp_pipeline.integrations.runpod.errors import PodLaunchError
from rp_pipeline.settings import NO_IMAGE

CLOUD_TYPES = ("ALL", "SECURE", "COMMUNITY")
DEFAULT_GPU_TYPES = ("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000", "NVIDIA L40S")
DEFAULT_PORTS = "8188/http,8888/http,22/tcp"
COMFYUI_PORT = 8188
# desiredStatus values of a pod RunPod has stopped (REST v2 reports ERROR as desiredStatus EXITED).
GONE_DESIRED = frozenset({"EXITED", "TERMINATED"})
# Lifecycle statuses (REST v2 `status`) after which a pod will not run again by itself.
GONE_LIFECYCLE = frozenset({"EXITED", "ERROR", "TERMINATED"})


@dataclass
class PodSpec:
    """What to launch. Env values may be RunPod secret references (`{{ RUNPOD_SECRET_name }}`):
    they pass through verbatim and RunPod resolves them inside the pod, so the secret never
    transits Dagster."""

    # Empty with a template: the template's image runs (a create with imageName overrides it).
    image: str = ""
    gpu_types: list[str] = field(default_factory=lambda: list(DEFAULT_GPU_TYPES))
    cloud_type: str = "ALL"
    # A network volume pins the datacenter and needs SECURE cloud (forced, with a log line).
    # Several ids, comma-separated (one volume per datacenter, each holding the models): the
    # GPU type and the datacenter are chosen together from the catalog's per-datacenter stock.
    network_volume_id: str | None = None
    template_id: str | None = None
    container_disk_gb: int = 20
    # 100 GB rather than 50: WAN 2.2 14B weights alone are ~40 GB. Unused when a network volume is attached: the volume is mounted instead.
    volume_gb: int = 100
    volume_mount_path: str = "/workspace"
    ports: str = DEFAULT_PORTS
    env: dict[str, str] = field(default_factory=dict, repr=False)
    min_vcpu: int = 2
    min_memory_gb: int = 15
    interruptible: bool = False
    bid_per_gpu: float | None = None  # spot bid; None = the GPU's current spot price
    max_cost_per_hr: float | None = None
    name: str | None = None  # readable suffix of the pod name

    def validate(self) -> None:
        problems = []
        if not self.gpu_types:
            problems.append("gpu_types is empty: give at least one GPU type id")
        if self.cloud_type not in CLOUD_TYPES:
            problems.append(
                f"cloud_type {self.cloud_type!r} is not one of {', '.join(CLOUD_TYPES)}"
            )
        if not self.image and not self.template_id:
            problems.append(NO_IMAGE)
        if f"{COMFYUI_PORT}/http" not in self.ports.replace(" ", ""):
            problems.append(f"ports {self.ports!r} do not expose {COMFYUI_PORT}/http (ComfyUI)")
        if problems:
            raise PodLaunchError("invalid pod spec: " + "; ".join(problems))

    def network_volume_ids(self) -> list[str]:
        return [v.strip() for v in (self.network_volume_id or "").split(",") if v.strip()]


@dataclass(frozen=True)
class Pod:
    id: str
    name: str
    desired_status: str
    gpu_type: str | None
    cost_per_hr: float | None
    env: dict[str, str] = field(repr=False)
    run_id: str | None
    created_at: float | None = None
    image: str | None = None
    runtime_ports: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # Where RunPod placed the pod (e.g. "EU-RO-1"); None if the API did not say.
    datacenter: str | None = None
    # Lifecycle: PROVISIONING, STARTING, RUNNING, EXITED, ERROR, TERMINATED (REST v2 `status`;
    # from GraphQL: STARTING while RUNNING without a runtime, else desiredStatus).
    status: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any], created_at: float | None = None) -> Pod:
        env = env_dict(record.get("env"))
        runtime = record.get("runtime") or {}
        machine = record.get("machine") or {}
        desired = record.get("desiredStatus") or "UNKNOWN"
        status = record.get("status") or (
            "STARTING" if desired == "RUNNING" and not record.get("runtime") else desired
        )
        return cls(
            id=record["id"],
            name=record.get("name") or "",
            desired_status=record.get("desiredStatus") or "UNKNOWN",
            gpu_type=(record.get("machine") or {}).get("gpuDisplayName"),
            cost_per_hr=record.get("costPerHr"),
            env=env,
            run_id=env.get("DAGSTER_RUN_ID") or None,
            created_at=created_at,
            image=record.get("imageName"),
            runtime_ports=list(runtime.get("ports") or []),
            datacenter=machine.get("dataCenterId") or record.get("dataCenterId"),
            status=status,
        )

    @property
    def is_gone(self) -> bool:
        """RunPod has stopped the pod (EXITED, TERMINATED, or ERROR on REST v2): it will run no
        more work by itself, and there is nothing left to terminate or to count as live."""
        return (
            self.desired_status.upper() in GONE_DESIRED
            or (self.status or "").upper() in GONE_LIFECYCLE
        )

    @property
    def is_ours(self) -> bool:
        """Launched by this pipeline: `DAGSTER_RUN_ID` in its env or a `dagster-` name (see
        `pod_name`). Pods of anyone else on the account are never touched."""
        return self.run_id is not None or self.name.startswith("dagster-")

    def summary(self) -> dict[str, Any]:
        """JSON-safe facts without env values (an env value may be a plain secret)."""
        facts = asdict(self)
        facts["env"] = sorted(self.env)
        return facts


@dataclass(frozen=True)
class ReadyPod:
    pod: Pod
    comfyui_url: str


def port_url(pod_id: str, runtime_ports: list[dict[str, Any]], port: int) -> str | None:
    """The public ip:port when RunPod exposes one (faster, no proxy timeout), else RunPod's
    HTTPS proxy."""
    for mapping in runtime_ports:
        if mapping.get("privatePort") == port:
            if mapping.get("isIpPublic") and mapping.get("publicPort"):
                return f"http://{mapping['ip']}:{mapping['publicPort']}"
            return f"https://{pod_id}-{port}.proxy.runpod.net"
    return None


def pod_name(run_id: str, label: str | None = None) -> str:
    """`dagster-<run8>-[label-]<nonce>`: unique, so a lost create can be found by it."""
    run8 = re.sub(r"[^a-z0-9]", "", run_id.lower())[:8] or "norun"
    slug = re.sub(r"[^a-z0-9]+", "-", (label or "").lower()).strip("-")[:32]
    nonce = secrets.token_hex(3)
    return f"dagster-{run8}-{slug}-{nonce}" if slug else f"dagster-{run8}-{nonce}"


def deploy_request(
    spec: PodSpec,
    name: str,
    run_id: str,
    cloud_type: str,
    datacenter: str | None,
    volume_id: str | None = None,
) -> dict[str, Any]:
    env = {**spec.env, "DAGSTER_RUN_ID": run_id}
    request: dict[str, Any] = {
        "name": name,
        "cloudType": cloud_type,
        "gpuCount": 1,
        "containerDiskInGb": spec.container_disk_gb,
        "minVcpuCount": spec.min_vcpu,
        "minMemoryInGb": spec.min_memory_gb,
        "ports": spec.ports.replace(" ", ""),
        "volumeMountPath": spec.volume_mount_path,
        "supportPublicIp": True,
        "startSsh": True,
        "env": [{"key": k, "value": v} for k, v in env.items()],
    }
    if volume_id:
        request["networkVolumeId"] = volume_id
        request["dataCenterId"] = datacenter
    else:
        request["volumeInGb"] = spec.volume_gb
    if spec.image:
        request["imageName"] = spec.image
    if spec.template_id:
        request["templateId"] = spec.template_id
    return request


def env_dict(raw: Any) -> dict[str, str]:
    """RunPod returns env as ["K=V", ...] (GraphQL) or {K: V} (REST)."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    env = {}
    for item in raw or []:
        if isinstance(item, dict):
            env[str(item.get("key"))] = str(item.get("value") or "")
        else:
            key, _, value = str(item).partition("=")
            env[key] = value
    return env
