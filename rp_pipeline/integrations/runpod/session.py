"""What both RunPod APIs share on the wire: the base URL, the keyed session, and how a timeout
is told apart (did the request reach RunPod or not)."""

from __future__ import annotations

import requests

from rp_pipeline.integrations.runpod.errors import RunPodAuthError, RunPodTransientError

DEFAULT_API_BASE_URL = "https://api.runpod.io"


def api_session(api_key: str, headers: dict[str, str]) -> requests.Session:
    """A session that sends the key (and `headers`) on every request; an empty key is refused
    before anything is sent."""
    if not api_key:
        raise RunPodAuthError(
            "no RunPod API key: set RUNPOD_API_KEY (RunPod console > Settings > API Keys)"
        )
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {api_key}", **headers})
    return session


def timeout_error(exc: requests.Timeout, url: str, timeout_s: float) -> RunPodTransientError:
    """A connect timeout never reached RunPod; a read timeout may have been applied there."""
    if isinstance(exc, requests.ConnectTimeout):
        return RunPodTransientError(
            f"could not connect to the RunPod API at {url}: {type(exc).__name__}",
            maybe_applied=False,
        )
    return RunPodTransientError(
        f"the RunPod API at {url} did not answer within {timeout_s:.0f} s", maybe_applied=True
    )
