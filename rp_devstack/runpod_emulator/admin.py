"""`EmulatorAdmin`: the emulator's admin API over HTTP, for tests and tools in another process."""

from __future__ import annotations

import inspect
import json
import urllib.request
from typing import Any

from rp_devstack.runpod_emulator.state import EmulatorState


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

    def fail_next(self, *args: Any, **kwargs: Any) -> None:
        """`EmulatorState.fail_next` with the same arguments, in the emulator's process."""
        given = inspect.signature(EmulatorState.fail_next).bind(self, *args, **kwargs).arguments
        self._call("POST", "faults", {k: v for k, v in given.items() if k != "self"})

    def set_stock(
        self,
        gpu_type_id: str,
        count: int,
        datacenter: str | None = None,
        *,
        seconds: float | None = None,
        after_s: float | None = None,
    ) -> None:
        """`EmulatorState.set_stock`: now or `after_s` from now, for `seconds` if given."""
        body = {"gpu_type_id": gpu_type_id, "count": count, "datacenter": datacenter}
        self._call("POST", "stock", {**body, "seconds": seconds, "after_s": after_s})

    def gpu_types(self) -> list[dict[str, Any]]:
        """Each GPU type's prices, stand-in step time, free GPUs and scheduled stock changes."""
        return list(self._call("GET", "gpu_types"))

    def set_gpu_offer(
        self,
        gpu_type_id: str,
        *,
        secure_price: float | None = None,
        step_seconds: float | None = None,
    ) -> None:
        body = {"gpu_type_id": gpu_type_id, "secure_price": secure_price}
        self._call("POST", "gpu_types", {**body, "step_seconds": step_seconds})

    def crash_pod(self, pod_id: str) -> None:
        self._call("POST", f"pods/{pod_id}/crash", {})

    def preempt_pod(self, pod_id: str) -> None:
        self._call("POST", f"pods/{pod_id}/preempt", {})

    def set_preemption_rate(self, rate_per_hour: float, seed: int | None = None) -> None:
        self._call("POST", "preemption", {"rate_per_hour": rate_per_hour, "seed": seed})

    def error_pod(self, pod_id: str, reason: str = "container failed to start") -> None:
        self._call("POST", f"pods/{pod_id}/error", {"reason": reason})

    def request_counts(self) -> dict[str, int]:
        return dict(self._call("GET", "requests"))

    def reset_request_counts(self) -> None:
        self._call("POST", "requests/reset", {})

    def contract_violations(self) -> list[str]:
        return list(self._call("GET", "contract_violations"))

    def set_boot_delay(self, seconds: float) -> None:
        self._call("POST", "boot_delay", {"seconds": seconds})

    def reset(self) -> None:
        self._call("POST", "reset", {})
