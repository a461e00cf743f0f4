"""Pod lifecycle on RunPod: launch with GPU fallback, wait for real readiness, terminate for sure.

`RunPodClient` is plain Python over a `RunPodBackend` (REST v2 by default, GraphQL with
`RUNPOD_API=graphql`); it does not import Dagster, so `rp-launch` starts fast. It is the one
layer that sends a RunPod call again; callers never retry it. Rules it keeps:
- a read is retried with exponential backoff while RunPod fails transiently (5xx, lost answer,
  unreachable), up to `read_patience_s`; a 429 is re-sent only after its Retry-After;
- a create is sent at most `create_attempts` times per launch, and never blindly: after an
  answer that was lost or a 5xx, the pod is looked up by its unique name and adopted if it
  exists (RunPod may have created it);
- GPU choice reads the catalog's stock first: a GPU type (or a volume's datacenter) with
  availability NONE, or above the price cap, is skipped with the reason logged;
- ready means RUNNING + runtime + the port mapped + ComfyUI answering HTTP (`readiness`);
- terminate is idempotent and confirmed by reading the pod back;
- every pod is named `dagster-<run id[:8]>-...` and carries `DAGSTER_RUN_ID` in its env.
Errors are one line and carry no advice to retry: what could be retried safely was.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from rp_pipeline.integrations.runpod.backend import RunPodBackend, make_backend
from rp_pipeline.integrations.runpod.catalog import (
    GpuType,
    gpu_type_from_record,
    placements,
    price_refusal,
    stock_refusal,
)
from rp_pipeline.integrations.runpod.errors import (
    CAPACITY_MARKER,
    GpuUnavailableError,
    NoCapacityError,
    PodLaunchError,
    RunPodApiError,
    RunPodAuthError,
    RunPodConfigError,
    RunPodRateLimitedError,
    RunPodTransientError,
    UnknownGpuError,
)
from rp_pipeline.integrations.runpod.pods import (
    CLOUD_TYPES,
    COMFYUI_PORT,
    DEFAULT_GPU_TYPES,
    DEFAULT_PORTS,
    Pod,
    PodSpec,
    ReadyPod,
    deploy_request,
    pod_name,
    port_url,
)
from rp_pipeline.integrations.runpod.readiness import wait_until_ready
from rp_pipeline.settings import current

log = logging.getLogger(__name__)

T = TypeVar("T")

# Creates one launch may send after transient failures (5xx, lost answer): each unanswered one
# is looked up by name before the next, so this bounds what one pod slot can cost, not pods.
DEFAULT_CREATE_ATTEMPTS = 4
# How long a read keeps being retried while RunPod fails transiently (a short outage is ridden
# out; a long one ends in one error line).
DEFAULT_READ_PATIENCE_S = 60.0
MAX_BACKOFF_S = 5.0

__all__ = [
    "CLOUD_TYPES",
    "COMFYUI_PORT",
    "DEFAULT_GPU_TYPES",
    "DEFAULT_PORTS",
    "GpuType",
    "Pod",
    "PodSpec",
    "ReadyPod",
    "RunPodClient",
    "pod_name",
    "port_url",
]


@dataclass
class _Failures:
    """Creates of one launch that failed transiently (5xx, lost answer, 429), against the
    client's `create_attempts`. A refusal for capacity is an answer, not a failure: the launch
    moves on to the next GPU type without counting it."""

    limit: int
    count: int = 0


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
        create_attempts: int = DEFAULT_CREATE_ATTEMPTS,
        read_patience_s: float = DEFAULT_READ_PATIENCE_S,
        retry_backoff_s: float = 0.5,
        api: str | None = None,
    ) -> None:
        if create_attempts < 1:
            raise RunPodConfigError(f"create_attempts must be 1 or more, got {create_attempts}")
        if read_patience_s < 0:
            raise RunPodConfigError(f"read_patience_s must be 0 or more, got {read_patience_s}")
        base_url = api_base_url or current("runpod_api_base_url")
        self.backend: RunPodBackend = backend or make_backend(
            api_key, base_url, request_timeout_s, api
        )
        self.poll_interval_s = poll_interval_s
        self.create_attempts = create_attempts
        self.read_patience_s = read_patience_s
        self.retry_backoff_s = retry_backoff_s

    def __repr__(self) -> str:
        return f"RunPodClient(backend={self.backend!r})"

    def with_read_patience(self, seconds: float) -> RunPodClient:
        """This client (same backend and session) with reads retried for `seconds` instead:
        for a caller that cannot wait as long, e.g. a sweep while an op is failing."""
        if seconds < 0:
            raise RunPodConfigError(f"read patience must be 0 s or more, got {seconds}")
        patient = copy.copy(self)
        patient.read_patience_s = seconds
        return patient

    # ------------------------------------------------------------------ queries

    def gpu_types(self, datacenter: str | None = None) -> list[GpuType]:
        records = self._retried(lambda: self.backend.gpu_types(datacenter))
        return [gpu_type_from_record(r) for r in records]

    def network_volumes(self) -> list[dict[str, Any]]:
        return self._retried(self.backend.network_volumes)

    def list_pods(self, name_prefix: str | None = None) -> list[Pod]:
        pods = [Pod.from_record(r) for r in self._retried(self.backend.list_pods)]
        return [p for p in pods if name_prefix is None or p.name.startswith(name_prefix)]

    def get(self, pod_id: str) -> Pod | None:
        """The pod, or None when RunPod does not know it (terminated or never existed)."""
        record = self._retried(lambda: self.backend.get_pod(pod_id))
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
        failures = _Failures(limit=self.create_attempts)
        attempts: list[tuple[str, str]] = []
        for gpu_id in spec.gpu_types:
            gpu = catalog[gpu_id]
            bid = None
            if spec.interruptible:
                bid = spec.bid_per_gpu if spec.bid_per_gpu is not None else gpu.spot_price
            price = gpu.price_for(cloud_type)
            refusal = price_refusal(spec, price, bid) or stock_refusal(gpu, volumes)
            if refusal:
                attempts.append((gpu_id, refusal))
                log.info("skipping %s: %s", gpu_id, refusal)
                continue
            for datacenter, volume_id in placements(gpu, volumes):
                where = f" in {datacenter}" if datacenter else ""
                request = deploy_request(spec, name, run_id, cloud_type, datacenter, volume_id)
                log.info("launching %s on %s%s (%s cloud)", name, gpu_id, where, cloud_type)
                try:
                    record = self._create({**request, "gpuTypeId": gpu_id}, bid, name, failures)
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

    def _create(
        self, request: dict[str, Any], bid: float | None, name: str, failures: _Failures
    ) -> dict[str, Any]:
        """Send the create; after an answer that was lost or a 5xx, adopt the pod if RunPod
        made it, else send again until the launch has failed `create_attempts` times."""
        while True:
            try:
                return self.backend.create_pod(request, bid)
            except (GpuUnavailableError, RunPodAuthError):
                raise
            except RunPodTransientError as exc:
                failures.count += 1
                log.warning("create of %s failed (%s)", name, exc)
                if exc.maybe_applied:
                    found = self._find_created(name, exc)
                    if found is not None:
                        log.info("pod %s was created despite the error; using it", found["id"])
                        return found
                if (
                    failures.count >= failures.limit
                    or (wait := self._backoff(exc, failures.count - 1, self.read_patience_s))
                    is None
                ):
                    raise PodLaunchError(
                        f"RunPod did not create pod {name}: {exc} ({failures.count} attempt(s); "
                        "no pod by that name exists)"
                    ) from None
                log.warning("sending the create of %s again in %.1f s", name, wait)
                time.sleep(wait)
            except RunPodApiError as exc:
                raise PodLaunchError(f"RunPod refused to create {name}: {exc}") from None

    def _find_created(self, name: str, lost: RunPodTransientError) -> dict[str, Any] | None:
        """The pod called `name`, looked up twice (a new pod may list a moment late)."""
        try:
            for look in range(2):
                if look:
                    time.sleep(self.retry_backoff_s * 2)
                for record in self._retried(self.backend.list_pods):
                    if record.get("name") == name:
                        return record
        except RunPodTransientError as exc:
            raise PodLaunchError(
                f"cannot tell whether pod {name} was created: RunPod's answer to the create was "
                f"lost ({lost}) and its pod list kept failing ({exc})"
            ) from None
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
        """See `readiness.wait_until_ready`."""
        return wait_until_ready(
            self, pod_id, port, deadline_s, terminate_on_timeout, on_state, token
        )

    def pod_logs(self, pod_id: str, lines: int = 20) -> list[str] | None:
        """The last `lines` lines of the pod's log, or None when the API has none to give
        (GraphQL has no log query)."""
        pod_logs = getattr(self.backend, "pod_logs", None)
        return pod_logs(pod_id, lines) if callable(pod_logs) else None

    # ------------------------------------------------------------------ terminate

    def terminate(self, pod_id: str, confirm_timeout_s: float = 60.0) -> None:
        """Terminate and confirm by reading back; an already-gone pod is success."""
        deadline = time.monotonic() + confirm_timeout_s
        attempt = 0
        while True:
            wait_at_least = 0.0
            try:
                self.backend.terminate_pod(pod_id)
            except RunPodTransientError as exc:
                wait_at_least = getattr(exc, "retry_after_s", 0.0)
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
            time.sleep(max(wait_at_least, min(self.retry_backoff_s * 2**attempt, MAX_BACKOFF_S)))
            attempt += 1

    # ------------------------------------------------------------------ templates

    def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """Create or update (with `id`) a pod template; sent again only when RunPod surely did
        not perform it (refused connection, 429): a create is not idempotent."""
        return self._retried(lambda: self.backend.save_template(template), idempotent=False)

    def list_templates(self) -> list[dict[str, Any]]:
        """The account's pod templates (id, name, imageName, ports)."""
        return self._retried(self.backend.list_templates)

    # ------------------------------------------------------------------ retries

    def _retried(self, call: Callable[[], T], idempotent: bool = True) -> T:
        """`call`, sent again with exponential backoff while RunPod fails transiently, for up
        to `read_patience_s`. A call that is not idempotent is sent again only when RunPod
        surely did not perform it."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return call()
            except RunPodTransientError as exc:
                spent = time.monotonic() - started
                wait = self._backoff(exc, attempt, self.read_patience_s - spent)
                if wait is None or (exc.maybe_applied and not idempotent):
                    raise RunPodTransientError(
                        f"{exc} (still failing after {spent:.0f} s); check the network or "
                        "RUNPOD_API_BASE_URL",
                        maybe_applied=exc.maybe_applied,
                    ) from None
                log.warning("RunPod API call failed (%s); retrying in %.1f s", exc, wait)
                time.sleep(wait)
                attempt += 1

    def _backoff(self, exc: RunPodTransientError, attempt: int, left_s: float) -> float | None:
        """Seconds to wait before sending again, or None when `left_s` does not allow it. A 429
        is never re-sent before its Retry-After."""
        if isinstance(exc, RunPodRateLimitedError):
            if exc.retry_after_s > left_s:
                return None
            log.warning("%s; waiting %.0f s as Retry-After says", exc, exc.retry_after_s)
            return exc.retry_after_s
        if left_s <= 0:
            return None
        return min(self.retry_backoff_s * 2**attempt, MAX_BACKOFF_S, left_s)
