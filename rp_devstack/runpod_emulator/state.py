"""The emulated RunPod account: pods (local processes), network volumes, templates, secrets,
GPU stock, billing and pending faults. Both APIs (GraphQL and REST v2) act on this one state.

Model errors raise `EmulatorError` (module `errors`); each API turns it into
the error shape it speaks.
"""

from __future__ import annotations

import logging
import re
import secrets
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rp_devstack.local_pods import ComfyCommand, LocalPod, standin_command
from rp_devstack.runpod_emulator import preemption
from rp_devstack.runpod_emulator.catalog import GpuOffer, at_gpu_speed, on_demand_price
from rp_devstack.runpod_emulator.errors import EmulatorError
from rp_devstack.runpod_emulator.market import GpuMarket, StockChange

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "devstack-runpod-key"
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
    system_log: list[str] = field(default_factory=list)  # host lifecycle lines (v2 "system")

    def seconds_running(self, now: float) -> float:
        extra = now - self.running_since if self.running_since is not None else 0.0
        return self.billed_seconds + extra

    @property
    def volume(self) -> NetworkVolume | None:
        return self.spec.get("networkVolume")


FAULT_MODES = ("5xx", "hang", "lose", "429")
# Logical operation names shared by both APIs; faults may also name a GraphQL root field.
OPERATIONS = (
    "create_pod",
    "list_pods",
    "get_pod",
    "terminate_pod",
    "stop_pod",
    "start_pod",
    "gpu_types",
    "pod_logs",
    "save_template",
    "list_templates",
    "network_volumes",
)


@dataclass
class Fault:
    """One injected failure. "5xx": 502 before doing anything; "hang": do it, answer after
    `hang_seconds`; "lose": do it, then close the connection without an answer; "429": refuse
    with Retry-After `retry_after` before doing anything."""

    mode: str
    operation: str | None
    hang_seconds: float
    retry_after: int = 1
    # Epoch second after which the fault no longer fires (None: until it is used): an outage
    # of a given length rather than of a given number of calls.
    until: float | None = None


class EmulatorState:
    """Everything the emulated account holds; thread-safe (one lock)."""

    def __init__(
        self,
        state_dir: str | Path,
        api_key: str = DEFAULT_API_KEY,
        *,
        boot_delay_s: float = 1.0,
        stock_per_datacenter: int = 8,
        secrets_store: dict[str, str] | None = None,
        comfy_command: ComfyCommand = standin_command,
        agent_grace_s: float = 15.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._api_key = api_key
        self.boot_delay_s = boot_delay_s
        self.comfy_command = comfy_command
        self.agent_grace_s = agent_grace_s
        self._secrets: dict[str, str] = dict(secrets_store or {})
        self._lock = threading.RLock()
        self._pods: dict[str, EmulatedPod] = {}
        self._volumes: dict[str, NetworkVolume] = {}
        self._templates: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._pod_keys: dict[str, str] = {}  # pod-scoped API key -> pod id
        self._market = GpuMarket(stock_per_datacenter)  # prices, speeds, stock (see market)
        self.random_preemption: preemption.RandomPreemption | None = None  # soak-test knob
        self._requests: Counter[str] = Counter()
        self._key_revoked = False

    @property
    def api_key(self) -> str:
        return self._api_key

    @property
    def base_url(self) -> str:
        """Where the APIs are served (the server knows); pods get it as RUNPOD_API_BASE_URL."""
        return "(not started)"

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
            self._market.reset_stock()

    def set_stock(
        self,
        gpu_type_id: str,
        count: int,
        datacenter: str | None = None,
        *,
        seconds: float | None = None,
        after_s: float | None = None,
    ) -> None:
        """`count` GPUs of the type free (in `datacenter`, else in each). With `after_s`, from
        that many seconds on rather than now; with `seconds`, only for that long, then the
        count from before comes back (e.g. count 0, seconds 30: out of stock for 30 s)."""
        with self._lock:
            self._market.schedule(gpu_type_id, count, datacenter, seconds, after_s)

    def free_gpus(self, gpu_type_id: str, datacenter: str) -> int:
        with self._lock:
            return self._market.free(gpu_type_id, datacenter)

    def scheduled_stock(self) -> list[StockChange]:
        """Stock changes still to come, soonest first."""
        with self._lock:
            return self._market.scheduled()

    def gpu_offers(self) -> list[GpuOffer]:
        """The GPU types on sale now, with their current prices and speeds."""
        with self._lock:
            return self._market.offers()

    def gpu_offer(self, gpu_type_id: str | None) -> GpuOffer:
        with self._lock:
            return self._market.offer(gpu_type_id)

    def set_gpu_offer(
        self,
        gpu_type_id: str,
        *,
        secure_price: float | None = None,
        step_seconds: float | None = None,
    ) -> GpuOffer:
        """Change a type's list price (community and spot follow it) or its stand-in speed.
        Pods already rented keep the price and speed they were rented at."""
        with self._lock:
            return self._market.set_offer(gpu_type_id, secure_price, step_seconds)

    def gpu_types(self) -> list[dict[str, Any]]:
        """Admin view: each type's prices, stand-in speed, free GPUs and coming stock changes."""
        with self._lock:
            return self._market.view()

    def set_boot_delay(self, seconds: float) -> None:
        self.boot_delay_s = seconds

    def fail_next(
        self,
        count: int = 1,
        mode: str = "5xx",
        operation: str | None = None,
        hang_seconds: float = 5.0,
        retry_after: int = 1,
        seconds: float | None = None,
    ) -> None:
        """The next `count` API calls (of `operation`, if given; either API) fail as `Fault`
        says, or only those within the next `seconds` if given. `operation` is a logical name
        (`OPERATIONS`) or a GraphQL root field name."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; use one of {', '.join(FAULT_MODES)}")
        until = time.time() + seconds if seconds is not None else None
        with self._lock:
            self._faults.extend(
                Fault(mode, operation, hang_seconds, int(retry_after), until) for _ in range(count)
            )

    def take_fault(self, *names: str | None) -> Fault | None:
        """The first pending fault aimed at any of `names` (or at every operation)."""
        now = time.time()
        with self._lock:
            self._faults = [f for f in self._faults if f.until is None or f.until > now]
            for i, fault in enumerate(self._faults):
                if fault.operation is None or fault.operation in names:
                    return self._faults.pop(i)
        return None

    def count_request(self, route: str) -> None:
        with self._lock:
            self._requests[route] += 1

    def request_counts(self) -> dict[str, int]:
        """Requests served per route ("POST /graphql", "GET /v2/pods/{id}", ...)."""
        with self._lock:
            return dict(self._requests)

    def reset_request_counts(self) -> None:
        with self._lock:
            self._requests.clear()

    def authorized(self, header: str | None, query_key: str | None) -> bool:
        presented = presented_key(header, query_key)
        if self._key_revoked:  # the account's key refused like any wrong key (pod keys work)
            return False
        return bool(presented) and secrets.compare_digest(presented or "", self._api_key)

    def revoke_api_key(self, revoked: bool = True) -> None:
        """Revoke (or restore) the account's API key, as a user does in RunPod's console:
        every call with it answers 401 until restored; pod-scoped keys keep working."""
        self._key_revoked = revoked

    def pod_scope(self, header: str | None, query_key: str | None) -> str | None:
        """Like RunPod, every pod gets an API key good for that pod only (`RUNPOD_API_KEY` in
        its env): the pod such a key belongs to, or None when the key is not one."""
        presented = presented_key(header, query_key) or ""
        with self._lock:
            for key, pod_id in self._pod_keys.items():
                if secrets.compare_digest(presented, key):
                    return pod_id
        return None

    def _pod_key(self, pod_id: str) -> str:
        """The pod's own key (one per pod, kept across stop/resume). Called with the lock held."""
        for key, owner in self._pod_keys.items():
            if owner == pod_id:
                return key
        key = f"pod-{pod_id}-{secrets.token_urlsafe(24)}"
        self._pod_keys[key] = pod_id
        return key

    def crash_pod(self, pod_id: str) -> None:
        """The pod's container dies: processes killed at once, desiredStatus EXITED."""
        with self._lock:
            pod = self._pods[pod_id]
            self._halt(pod, "EXITED")
            local, pod.local = pod.local, None
        if local is not None:
            local.kill()

    def preempt_pod(self, pod_id: str) -> None:
        """Spot preemption of an interruptible pod (see `preemption`)."""
        preemption.preempt(self, pod_id)

    def set_preemption_rate(self, rate_per_hour: float, seed: int | None = None) -> None:
        """Preempt running interruptible pods at random, `rate_per_hour` each (0: off)."""
        preemption.set_random_rate(self, rate_per_hour, seed)

    def error_pod(self, pod_id: str, reason: str = "container failed to start") -> None:
        """The pod's container is in an unrecoverable error state (REST v2 status ERROR)."""
        with self._lock:
            pod = self._pods[pod_id]
            pod.system_log.append(f"error: {reason}")
            self._halt(pod, "ERROR")
            local, pod.local = pod.local, None
        if local is not None:
            local.kill()

    def pod_log_lines(
        self, pod_id: str, source: str | None = None, tail: int | None = None
    ) -> list[tuple[str, str]]:
        """The last `tail` (all if None) (source, line) pairs: "system" lifecycle lines, then "container"
        lines (the pod processes' output files)."""
        with self._lock:
            pod = self._require(pod_id)
            lines = [("system", line) for line in pod.system_log] if source != "container" else []
        if source != "system":
            logs = self.state_dir / "pods" / pod_id / "logs"
            for path in sorted(logs.glob("*.log")) if logs.is_dir() else []:
                text = path.read_text(errors="replace")
                lines += [("container", line) for line in text.splitlines() if line.strip()]
        if tail is None:
            return lines
        return lines[-tail:] if tail else []

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
        preemption.set_random_rate(self, 0.0)
        with self._lock:
            self._market.reset_offers()
            live = [p for p in self._pods.values() if p.status != "TERMINATED"]
            for pod in live:
                self._halt(pod, "TERMINATED")
            self._faults.clear()
            self._requests.clear()
            self._key_revoked = False
        self._stop_all(live)
        self.reset_stock()

    def stop_every_pod(self) -> None:
        preemption.set_random_rate(self, 0.0)
        with self._lock:
            live = [p for p in self._pods.values() if p.local is not None]
            for pod in live:
                self._halt(pod, "TERMINATED")
        self._stop_all(live)

    # ---------------------------------------------------------------- the RunPod model

    def deploy(self, spec: dict[str, Any], bid_per_gpu: float | None) -> EmulatedPod:
        spec = self._apply_template(spec)
        if not spec.get("imageName"):
            raise EmulatorError("imageName or templateId is required", field="imageName")
        gpu = self.gpu_offer(spec.get("gpuTypeId"))
        gpu_count = int(spec.get("gpuCount") or 1)
        cloud = spec.get("cloudType") or "ALL"
        # GraphQL names one datacenter; REST v2 a preference list.
        preferred = list(spec.get("dataCenterIds") or [])
        if spec.get("dataCenterId"):
            preferred = [spec["dataCenterId"]]
        volume = None
        if spec.get("networkVolumeId"):
            volume = self._volumes.get(spec["networkVolumeId"])
            if volume is None:
                raise EmulatorError(
                    f"Network volume {spec['networkVolumeId']} not found", field="networkVolumeId"
                )
            if cloud == "COMMUNITY":
                raise EmulatorError(
                    "Network volumes are only available on Secure Cloud", field="cloudType"
                )
            if preferred and volume.datacenter not in preferred:
                raise EmulatorError(
                    f"Network volume is in {volume.datacenter}, not in {', '.join(preferred)}",
                    field="dataCenterIds",
                )
            preferred = [volume.datacenter]
        if bid_per_gpu is not None and bid_per_gpu < gpu.spot_price:
            raise EmulatorError(
                f"Your bid price is too low; the minimum bid for {gpu.display_name} "
                f"is ${gpu.spot_price:.2f}/hr"
            )
        env = {e["key"]: e.get("value") or "" for e in spec.get("env") or []}
        with self._lock:
            chosen = self._market.take(gpu.id, gpu_count, preferred)
            now = time.time()
            price = bid_per_gpu if bid_per_gpu is not None else on_demand_price(gpu, cloud)
            pod = EmulatedPod(
                id=new_id(),
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
            pod.system_log.append(f"pod {pod.id} scheduled on {gpu.id} in {chosen}")
            self._run(pod)
            log.info("pod %s (%s) deployed on %s in %s", pod.id, pod.name, gpu.id, chosen)
            return pod

    def get_pod(self, pod_id: str) -> EmulatedPod | None:
        with self._lock:
            pod = self._pods.get(pod_id)
            if pod is None or pod.status == "TERMINATED":
                return None
            self.refresh(pod)
            return pod

    def list_pods(self) -> list[EmulatedPod]:
        with self._lock:
            live = [p for p in self._pods.values() if p.status != "TERMINATED"]
            for pod in live:
                self.refresh(pod)
            return live

    def stop_pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            pod = self._require(pod_id)
            self._halt(pod, "EXITED")
        self._stop_processes(pod)
        return pod

    def resume_pod(self, pod_id: str) -> EmulatedPod:
        with self._lock:
            pod = self._require(pod_id)
            if pod.status != "RUNNING":
                self._market.take(pod.gpu.id, pod.spec["gpuCount"], [pod.datacenter])
                self._run(pod)
            return pod

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
                raise EmulatorError("Template name must be unique", field="name")
            if template_id and template_id not in self._templates:
                raise EmulatorError(f"Template {template_id} not found", status=404)
            template_id = template_id or new_id()[:10]
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

    def network_volumes(self) -> list[NetworkVolume]:
        with self._lock:
            return list(self._volumes.values())

    def refresh(self, pod: EmulatedPod) -> None:
        """A pod whose container's main process died shows as EXITED (as on RunPod)."""
        local = pod.local
        if pod.status == "RUNNING" and local is not None and local.comfy_exited():
            pod.system_log.append("container exited")
            self._halt(pod, "EXITED")
            pod.local = None
            threading.Thread(target=local.stop, daemon=True).start()

    def lifecycle(self, pod: EmulatedPod) -> str:
        """REST v2 status: PROVISIONING (boot delay) -> STARTING (until ComfyUI listens) ->
        RUNNING; or EXITED / ERROR / TERMINATED."""
        if pod.status != "RUNNING":
            return pod.status
        if time.time() < pod.booted_at:
            return "PROVISIONING"
        return "RUNNING" if self.comfy_port(pod) is not None else "STARTING"

    def comfy_port(self, pod: EmulatedPod) -> int | None:
        """ComfyUI's local port once the pod has booted and ComfyUI listens, else None."""
        local = pod.local
        if pod.status != "RUNNING" or local is None:
            return None
        if time.time() < pod.booted_at or not local.comfy_listening():
            return None
        return local.comfy_port

    # ---------------------------------------------------------------- internals

    def _require(self, pod_id: str) -> EmulatedPod:
        pod = self._pods.get(pod_id)
        if pod is None or pod.status == "TERMINATED":
            raise EmulatorError("pod not found", status=404)
        return pod

    def _apply_template(self, spec: dict[str, Any]) -> dict[str, Any]:
        template_id = spec.get("templateId")
        if not template_id:
            return spec
        template = self._templates.get(template_id)
        if template is None:
            raise EmulatorError(f"Template {template_id} not found", field="templateId")
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

    def _run(self, pod: EmulatedPod) -> None:
        """Start (or restart) the pod's processes. Called with the lock held."""
        now = time.time()
        pod.status = "RUNNING"
        pod.status_changed_at = now
        pod.running_since = now
        pod.booted_at = now + self.boot_delay_s
        pod.local = LocalPod(
            pod_id=pod.id,
            root=self.state_dir / "pods" / pod.id,
            env=self._resolve_secrets(pod.env),
            comfy_command=at_gpu_speed(self.comfy_command, pod.gpu),
            agent_grace_s=self.agent_grace_s,
            api_base_url=self.base_url,
            api_key=self._pod_key(pod.id),
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
            self._market.give_back(pod.gpu.id, pod.datacenter, pod.spec["gpuCount"])
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
            "gpu_step_seconds": pod.gpu.step_seconds,
            "seconds": round(seconds, 3),
            "cost": round(pod.cost_per_hr * seconds / 3600, 6),
            "created_at": pod.created_at,
            "terminated_at": pod.terminated_at,
            "env": dict(pod.env),
            "pids": pod.local.pids() if pod.local else [],
            "root": str(self.state_dir / "pods" / pod.id),
        }


def new_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(14))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def presented_key(header: str | None, query_key: str | None) -> str | None:
    """The API key of a request: `Authorization: Bearer KEY`, else `?api_key=KEY`."""
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return query_key
