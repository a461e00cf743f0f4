"""The per-pod token that the pod's proxy demands before anything reaches ComfyUI.

Whoever launches a pod makes a fresh token and puts it in the pod's env; every later reader (the
next op, `rp-launch open`) reads it back from the pod through the RunPod API with the account's
key. So the token is never stored in Dagster (run storage, metadata, logs) or printed by default.
"""

from __future__ import annotations

import secrets
from typing import Any

POD_TOKEN_ENV = "RP_POD_TOKEN"


def new_pod_token() -> str:
    return secrets.token_urlsafe(32)


def pod_token(pod: Any) -> str | None:
    """The token in a pod's env (`Pod.env`), or None for a pod launched without one."""
    return (getattr(pod, "env", None) or {}).get(POD_TOKEN_ENV) or None
