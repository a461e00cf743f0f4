"""The RunPod layer's errors: one type per failure, each message saying what to do next.

No message ever carries the API key; request bodies (GraphQL documents, REST v2 JSON) are not
attached either (they may carry pod env values).
"""

from __future__ import annotations

# RunPod's words for "no capacity for this GPU type now" (GraphQL error, REST v2 400 detail).
CAPACITY_MARKER = "no longer any instances available"


class RunPodError(Exception):
    """Base of every error of the RunPod layer."""


class RunPodConfigError(RunPodError):
    """Our own settings are unusable (e.g. an unknown RUNPOD_API value)."""


class RunPodAuthError(RunPodError):
    """HTTP 401: the key is missing, wrong or revoked."""


class RunPodApiError(RunPodError):
    """RunPod answered with an error (GraphQL `errors[0].message`) or something unreadable."""


class RunPodTransientError(RunPodApiError):
    """Network error, timeout, 5xx or non-JSON answer: `RunPodClient` retries the call where safe.

    `maybe_applied` is True when the request may have reached RunPod (a read timeout, a 5xx after
    the body was sent): a create in that state must be looked up before it is sent again.
    """

    def __init__(self, message: str, *, maybe_applied: bool) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied


class RunPodRateLimitedError(RunPodTransientError):
    """HTTP 429 that outlasted our patience: RunPod did not perform the call (safe to re-send)."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, maybe_applied=False)
        self.retry_after_s = retry_after_s


class RunPodNotFoundError(RunPodApiError):
    """HTTP 404: the pod (or template) does not exist, or no longer does."""


class RunPodRequestError(RunPodApiError):
    """HTTP 422: the request does not match RunPod's contract; the message names the field."""


class GpuUnavailableError(RunPodApiError):
    """RunPod's "no longer any instances available": no capacity for one GPU type right now."""


class UnknownGpuError(RunPodError):
    """A GPU type id RunPod does not know (checked before anything is launched)."""


class NoCapacityError(RunPodError):
    """Every GPU type in the preference list was unavailable, too expensive or refused."""

    def __init__(self, attempts: list[tuple[str, str]]) -> None:
        self.attempts = attempts
        tried = "; ".join(f"{gpu}: {why}" for gpu, why in attempts) or "no GPU types given"
        super().__init__(
            f"no pod could be launched on any GPU type in the preference list ({tried}). "
            "Add more GPU types, allow another cloud type, raise max_cost_per_hr, or retry later."
        )


class PodLaunchError(RunPodError):
    """The create call failed for a reason other than capacity (bad image, volume, bid...)."""


class PodNotReadyError(RunPodError):
    """The pod did not become ready: deadline passed, it exited, or it vanished."""

    def __init__(self, pod_id: str, reason: str, *, terminated: bool) -> None:
        self.pod_id = pod_id
        self.reason = reason
        self.terminated = terminated
        after = (
            "it has been terminated"
            if terminated
            else f"it is still there: `rp-launch terminate {pod_id}` when done"
        )
        super().__init__(f"pod {pod_id} not ready: {reason}; {after}")
