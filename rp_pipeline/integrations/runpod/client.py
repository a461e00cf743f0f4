"""Pod lifecycle on RunPod: launch with GPU fallback, wait for real readiness, terminate for sure.

`RunPodClient` is plain Python over a `RunPodBackend` (REST v2 by default, GraphQL with
`RUNPOD_API=graphql`); it does not import Dagster, so `rp-launch` starts fast. Rules it keeps:
- a create is never blindly retried: after an ambiguous failure the pod is looked up by its
  unique name first;
- GPU choice reads the catalog's stock first: a GPU type (or a volume's datacenter) with
  availability NONE, or above the price cap, is skipped with the reason logged;
- ready means RUNNING + runtime + the port mapped + ComfyUI answering HTTP, not desiredStatus;
  ERROR / EXITED before that fails at once, with the last lines of the pod's log;
- terminate is idempotent and confirmed by reading the pod back;
- every pod is named `dagster-<run id[:8]>-...` and carries `DAGSTER_RUN_ID` in its env.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import requests

from rp_pipeline.integrations.runpod.backend import CAPACITY_MARKER, RunPodBackend, make_backend
from rp_pipeline.integrations.runpod.errors import (
    GpuUnavailableError,
    NoCapacityError,
    PodLaunchError,
    PodNotReadyError,
    RunPodApiError,
    RunPodAuthError,
    RunPodError,
    RunPodTransientError,
    UnknownGpuError,
)
from rp_pipeline.integrations.runpod.token import pod_token
from rp_pipeline.settings import current

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOUD_TYPES = ("ALL", "SECURE", "COMMUNITY")
DEFAULT_IMAGE = "ghcr.io/runpod-dagster/comfyui-wan22:latest"
DEFAULT_GPU_TYPES = ("NVIDIA GeForce RTX 4090", "NVIDIA RTX A6000", "NVIDIA L40S")
DEFAULT_PORTS = "8188/http,8888/http,22/tcp"
COMFYUI_PORT = 8188
# desiredStatus values of a pod RunPod has stopped (REST v2 reports ERROR as desiredStatus EXITED).
GONE_DESIRED = frozenset({"EXITED", "TERMINATED"})
# Lifecycle statuses (REST v2 `status`) after which a pod will not run again by itself.
GONE_LIFECYCLE = frozenset({"EXITED", "ERROR", "TERMINATED"})
AVAILABILITY_RANK = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}
LOG_LINES_IN_ERRORS = 5


@dataclass
class PodSpec:
    """What to launch. Env values may be RunPod secret references (`{{ RUNPOD_SECRET_name }}`):
    they pass through verbatim and RunPod resolves them inside the pod, so the secret never
    transits Dagster."""

    image: str = DEFAULT_IMAGE
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
            problems.append("give an image or a template_id")
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
        env = _env_dict(record.get("env"))
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


@dataclass(frozen=True)
class GpuType:
    id: str
    display_name: str
    memory_gb: int | None
    secure_price: float | None
    community_price: float | None
    spot_price: float | None
    stock_status: str | None
    # Catalog stock: NONE / LOW / MEDIUM / HIGH overall and per datacenter id; None and {} when
    # the API does not report it (GraphQL: then a create is tried and capacity errors decide).
    availability: str | None = None
    datacenters: dict[str, str] = field(default_factory=dict)

    def price_for(self, cloud_type: str) -> float | None:
        """On-demand $/hr; for ALL the dearer of the two, since RunPod may pick either."""
        prices = {"SECURE": [self.secure_price], "COMMUNITY": [self.community_price]}.get(
            cloud_type, [self.secure_price, self.community_price]
        )
        known = [p for p in prices if p]
        return max(known) if known else None


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


class RunPodClient:
    """Pod lifecycle over a `RunPodBackend`. The key lives only inside the backend's session."""

    def __init__(
        self,
        api_key: str,
        api_base_url: str | None = None,
        *,
        backend: RunPodBackend | None = None,
        request_timeout_s: float = 30.0,
        poll_interval_s: float = 2.0,
        retry_attempts: int = 4,
        retry_backoff_s: float = 0.5,
        api: str | None = None,
    ) -> None:
        base_url = api_base_url or current("runpod_api_base_url")
        self.backend: RunPodBackend = backend or make_backend(
            api_key, base_url, request_timeout_s, api
        )
        self.poll_interval_s = poll_interval_s
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s

    def __repr__(self) -> str:
        return f"RunPodClient(backend={self.backend!r})"

    # ------------------------------------------------------------------ queries

    def gpu_types(self, datacenter: str | None = None) -> list[GpuType]:
        return [_gpu_type(r) for r in self._read(lambda: self.backend.gpu_types(datacenter))]

    def network_volumes(self) -> list[dict[str, Any]]:
        return self._read(self.backend.network_volumes)

    def list_pods(self, name_prefix: str | None = None) -> list[Pod]:
        pods = [Pod.from_record(r) for r in self._read(self.backend.list_pods)]
        return [p for p in pods if name_prefix is None or p.name.startswith(name_prefix)]

    def get(self, pod_id: str) -> Pod | None:
        """The pod, or None when RunPod does not know it (terminated or never existed)."""
        record = self._read(lambda: self.backend.get_pod(pod_id))
        return Pod.from_record(record) if record else None

    # ------------------------------------------------------------------ launch

    def launch(self, spec: PodSpec, run_id: str) -> Pod:
        """Create one pod on the first GPU type in `spec.gpu_types` that the catalog shows in
        stock (in one of the network volumes' datacenters, if any) and that places."""
        spec.validate()
        if spec.interruptible and not getattr(self.backend, "supports_interruptible", True):
            raise PodLaunchError(
                "interruptible (spot) pods exist only in RunPod's GraphQL API, not REST v2: "
                "set RUNPOD_API=graphql, or launch on-demand"
            )
        catalog = {g.id: g for g in self.gpu_types()}
        unknown = [g for g in spec.gpu_types if g not in catalog]
        if unknown:
            raise UnknownGpuError(
                f"unknown GPU type id(s): {', '.join(unknown)}. Use ids as RunPod spells them "
                f"(`rp-launch gpus` lists them), e.g. {', '.join(sorted(catalog)[:3])}"
            )
        cloud_type, volumes = self._placement(spec)
        name = pod_name(run_id, spec.name)
        attempts: list[tuple[str, str]] = []
        for gpu_id in spec.gpu_types:
            gpu = catalog[gpu_id]
            bid = None
            if spec.interruptible:
                bid = spec.bid_per_gpu if spec.bid_per_gpu is not None else gpu.spot_price
            price = gpu.price_for(cloud_type)
            refusal = _price_refusal(spec, price, bid) or _stock_refusal(gpu, volumes)
            if refusal:
                attempts.append((gpu_id, refusal))
                log.info("skipping %s: %s", gpu_id, refusal)
                continue
            for datacenter, volume_id in _placements(gpu, volumes):
                where = f" in {datacenter}" if datacenter else ""
                request = _deploy_request(spec, name, run_id, cloud_type, datacenter, volume_id)
                log.info("launching %s on %s%s (%s cloud)", name, gpu_id, where, cloud_type)
                try:
                    record = self._create_once({**request, "gpuTypeId": gpu_id}, bid, name)
                except GpuUnavailableError as exc:
                    # REST v2 refuses "no capacity" and rule violations alike with a 400.
                    why = (
                        "no capacity" if CAPACITY_MARKER in str(exc).lower() else f"refused: {exc}"
                    )
                    attempts.append((f"{gpu_id}{where}", why))
                    log.warning("no capacity for %s%s; trying the next candidate", gpu_id, where)
                    continue
                pod = Pod.from_record(record, created_at=time.time())
                if pod.datacenter is None and datacenter:
                    pod = replace(pod, datacenter=datacenter)
                stock = gpu.datacenters.get(datacenter or "", gpu.availability) or "unknown"
                log.info(
                    "chose %s%s (stock %s, $%s/hr)%s",
                    gpu_id,
                    where,
                    stock,
                    pod.cost_per_hr,
                    "; skipped " + "; ".join(f"{g}: {why}" for g, why in attempts)
                    if attempts
                    else "",
                )
                log.info(
                    "pod %s (%s) created on %s at $%s/hr", pod.id, name, gpu_id, pod.cost_per_hr
                )
                return pod
        raise NoCapacityError(attempts)

    def _placement(self, spec: PodSpec) -> tuple[str, dict[str, str]]:
        """The cloud type and {datacenter: network volume id} (empty: no volume)."""
        wanted = spec.network_volume_ids()
        if not wanted:
            return spec.cloud_type, {}
        volumes = {v["id"]: v for v in self.network_volumes()}
        missing = [v for v in wanted if v not in volumes]
        if missing:
            raise PodLaunchError(
                f"network volume {', '.join(missing)} is not in this RunPod account; "
                f"check RUNPOD_NETWORK_VOLUME_ID (known: {', '.join(volumes) or 'none'})"
            )
        by_datacenter: dict[str, str] = {}
        for volume_id in wanted:
            datacenter = volumes[volume_id].get("dataCenterId") or ""
            if datacenter in by_datacenter:
                log.warning(
                    "network volumes %s and %s are both in %s; using %s there",
                    by_datacenter[datacenter],
                    volume_id,
                    datacenter,
                    by_datacenter[datacenter],
                )
                continue
            by_datacenter[datacenter] = volume_id
        if spec.cloud_type != "SECURE":
            log.info("network volumes need SECURE cloud; using it")
        return "SECURE", by_datacenter

    def _create_once(self, request: dict[str, Any], bid: float | None, name: str) -> dict[str, Any]:
        """Create, but after an ambiguous failure look for the pod by name before trying again."""
        last: RunPodTransientError | None = None
        for attempt in range(self.retry_attempts):
            if attempt:
                time.sleep(self.retry_backoff_s * 2 ** (attempt - 1))
            try:
                return self.backend.create_pod(request, bid)
            except RunPodTransientError as exc:
                last = exc
                log.warning("create of %s failed (%s); checking whether it went through", name, exc)
                if exc.maybe_applied:
                    found = self._find_by_name(name)
                    if found is not None:
                        log.info("pod %s was created despite the error; using it", found["id"])
                        return found
            except (GpuUnavailableError, RunPodAuthError):
                raise
            except RunPodApiError as exc:
                raise PodLaunchError(f"RunPod refused to create {name}: {exc}") from None
        raise PodLaunchError(
            f"could not create {name}: {last} (after {self.retry_attempts} attempts; none of them "
            "left a pod by that name). Check the network or RUNPOD_API_BASE_URL and retry"
        )

    def _find_by_name(self, name: str, looks: int = 2) -> dict[str, Any] | None:
        """The pod called `name`; looked up twice, since a new pod may list a moment late."""
        for look in range(looks):
            if look:
                time.sleep(self.retry_backoff_s * 2)
            for record in self._read(self.backend.list_pods):
                if record.get("name") == name:
                    return record
        return None

    # ------------------------------------------------------------------ readiness

    def wait_until_ready(
        self,
        pod_id: str,
        port: int = COMFYUI_PORT,
        deadline_s: float = 300.0,
        terminate_on_timeout: bool = True,
        on_state: Callable[[str], None] | None = None,
        token: str | None = None,
    ) -> ReadyPod:
        """Poll until the pod runs, maps `port`, and ComfyUI answers `GET /system_stats`.

        ComfyUI sits behind the pod's token proxy: the probe sends `token`, by default the one
        in the pod's env (RP_POD_TOKEN). Fails fast on EXITED/TERMINATED. On timeout or exit
        the pod is terminated unless `terminate_on_timeout` is False (a dead or late pod only
        costs money).
        """
        deadline = time.monotonic() + deadline_s
        state = ""
        while True:
            try:
                record = self.backend.get_pod(pod_id)
            except RunPodTransientError as exc:
                record, new_state = {}, f"API unreachable ({exc}); retrying"
            else:
                if record is None:
                    raise PodNotReadyError(
                        pod_id, "RunPod no longer knows the pod", terminated=True
                    )
                pod = Pod.from_record(record)
                url = port_url(pod_id, pod.runtime_ports, port)
                new_state = _describe(pod, url, port)
                if pod.is_gone:
                    reason = f"it is {pod.status or pod.desired_status} before ComfyUI answered"
                    self._give_up(pod_id, reason + self._log_tail(pod_id), terminate_on_timeout)
                probe_token = token or pod_token(pod)
                if pod.desired_status == "RUNNING" and url and _comfy_answers(url, probe_token):
                    log.info("pod %s ready: ComfyUI at %s", pod_id, url)
                    return ReadyPod(pod=pod, comfyui_url=url)
            if new_state != state:
                state = new_state
                log.info("pod %s: %s", pod_id, state)
                if on_state:
                    on_state(state)
            if time.monotonic() >= deadline:
                self._give_up(
                    pod_id,
                    f"not ready within {deadline_s:.0f} s (last state: {state})"
                    + self._log_tail(pod_id),
                    terminate_on_timeout,
                )
            time.sleep(max(0.0, min(self.poll_interval_s, deadline - time.monotonic())))

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        """The last `lines` lines of the pod's log, or None when the API has none to give
        (GraphQL has no log query)."""
        pod_logs = getattr(self.backend, "pod_logs", None)
        return pod_logs(pod_id, lines) if callable(pod_logs) else None

    def _log_tail(self, pod_id: str) -> str:
        """ "; last log lines: a | b" for error messages, or "" when there are none."""
        lines = self.pod_logs(pod_id, LOG_LINES_IN_ERRORS)
        if not lines:
            return ""
        return "; last log lines: " + " | ".join(line.strip()[:200] for line in lines)

    def _give_up(self, pod_id: str, reason: str, terminate: bool) -> None:
        if terminate:
            try:
                self.terminate(pod_id)
            except RunPodError as exc:
                raise PodNotReadyError(
                    pod_id, f"{reason}; terminating it failed too: {exc}", terminated=False
                ) from None
        raise PodNotReadyError(pod_id, reason, terminated=terminate)

    # ------------------------------------------------------------------ terminate

    def terminate(self, pod_id: str, confirm_timeout_s: float = 60.0) -> None:
        """Terminate and confirm by reading back; an already-gone pod is success."""
        deadline = time.monotonic() + confirm_timeout_s
        attempt = 0
        while True:
            try:
                self.backend.terminate_pod(pod_id)
            except RunPodTransientError as exc:
                log.warning("terminate %s: %s; will check and retry", pod_id, exc)
            except RunPodApiError as exc:
                # RunPod errors on a pod it no longer knows; the read-back decides.
                log.info("terminate %s: %s", pod_id, exc)
            try:
                record = self.backend.get_pod(pod_id)
            except RunPodTransientError as exc:
                log.warning("confirming termination of %s: %s", pod_id, exc)
            else:
                if record is None or record.get("desiredStatus") == "TERMINATED":
                    log.info("pod %s terminated", pod_id)
                    return
            if time.monotonic() >= deadline:
                raise RunPodApiError(
                    f"could not confirm that pod {pod_id} is terminated within "
                    f"{confirm_timeout_s:.0f} s; it may still be billing: check the RunPod "
                    f"console or run `rp-launch terminate {pod_id}`"
                )
            time.sleep(min(self.retry_backoff_s * 2**attempt, 5.0))
            attempt += 1

    # ------------------------------------------------------------------ templates

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """Create or update (with `id`) a pod template; not retried (a create is not idempotent)."""
        return self.backend.save_template(template)

    def list_templates(self) -> list[dict[str, Any]]:
        """The account's pod templates (id, name, imageName, ports)."""
        return self._read(self.backend.list_templates)

    # ------------------------------------------------------------------ helpers

    def _read(self, call: Callable[[], T]) -> T:
        """An idempotent call, retried with exponential backoff on transient errors."""
        for attempt in range(self.retry_attempts):
            try:
                return call()
            except RunPodTransientError as exc:
                if attempt == self.retry_attempts - 1:
                    raise RunPodTransientError(
                        f"{exc} (gave up after {self.retry_attempts} attempts); check the "
                        "network or RUNPOD_API_BASE_URL and retry",
                        maybe_applied=exc.maybe_applied,
                    ) from None
                delay = self.retry_backoff_s * 2**attempt
                log.warning("RunPod API call failed (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _deploy_request(
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
        "imageName": spec.image,
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
    if spec.template_id:
        request["templateId"] = spec.template_id
    return request


def _price_refusal(spec: PodSpec, on_demand: float | None, bid: float | None) -> str | None:
    """Why this GPU type must not be launched under the spec's price rules, if it must not."""
    if spec.interruptible and bid is None:
        return "no spot price known; set bid_per_gpu"
    price = bid if spec.interruptible else on_demand
    if spec.max_cost_per_hr is None:
        return None
    if price is None:
        return "price unknown, so max_cost_per_hr cannot be checked"
    if price > spec.max_cost_per_hr:
        return f"${price:.2f}/hr is above max_cost_per_hr ${spec.max_cost_per_hr:.2f}"
    return None


def _stock_refusal(gpu: GpuType, volumes: dict[str, str]) -> str | None:
    """Why the catalog says this GPU type cannot be placed now, if it says so."""
    if gpu.availability == "NONE":
        return "no stock (catalog availability NONE)"
    if volumes and gpu.availability is not None:
        stocked = [dc for dc in volumes if gpu.datacenters.get(dc, "NONE") != "NONE"]
        if not stocked:
            return f"no stock in the network volumes' datacenters ({', '.join(volumes)})"
    return None


def _placements(gpu: GpuType, volumes: dict[str, str]) -> list[tuple[str | None, str | None]]:
    """(datacenter, volume id) candidates for one GPU type, best stock first."""
    if not volumes:
        return [(None, None)]
    if gpu.availability is None:  # no stock figures: try the volumes in the order given
        return list(volumes.items())
    stocked = [dc for dc in volumes if gpu.datacenters.get(dc, "NONE") != "NONE"]
    stocked.sort(key=lambda dc: AVAILABILITY_RANK.get(gpu.datacenters[dc], 3))
    return [(dc, volumes[dc]) for dc in stocked]


def _env_dict(raw: Any) -> dict[str, str]:
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


def _gpu_type(record: dict[str, Any]) -> GpuType:
    lowest = record.get("lowestPrice") or {}
    datacenters = {d["id"]: d["availability"] for d in record.get("dataCenters") or []}
    return GpuType(
        id=record["id"],
        display_name=record.get("displayName") or record["id"],
        memory_gb=record.get("memoryInGb"),
        secure_price=record.get("securePrice"),
        community_price=record.get("communityPrice"),
        spot_price=record.get("secureSpotPrice") or lowest.get("minimumBidPrice"),
        stock_status=lowest.get("stockStatus") or record.get("availability"),
        availability=record.get("availability"),
        datacenters=datacenters,
    )


def _describe(pod: Pod, url: str | None, port: int) -> str:
    if pod.desired_status != "RUNNING":
        return pod.desired_status
    if pod.status == "PROVISIONING":
        return "PROVISIONING (RunPod is allocating the machine)"
    if not pod.runtime_ports and url is None:
        return "RUNNING, container starting (no runtime yet)"
    if url is None:
        return f"RUNNING, port {port} not mapped yet"
    return f"RUNNING, waiting for ComfyUI at {url}"


def _comfy_answers(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for path in ("/system_stats", "/queue"):
        try:
            if requests.get(url + path, headers=headers, timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            return False
    return False
