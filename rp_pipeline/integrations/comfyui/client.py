"""ComfyUI HTTP client (plain Python; the Dagster wrapper lives in resource.py).

Submits API-format workflows with `POST /prompt`, uploads start images with
`POST /upload/image`, downloads outputs with `/view`; `wait()` (follow.py) follows a prompt to
its end. Errors are in errors.py, what ComfyUI answers in results.py.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections import deque
from pathlib import Path, PurePosixPath
from typing import Any

import requests

from rp_pipeline.integrations.comfyui.errors import (
    ComfyUIError,
    ComfyUIUnavailable,
    PromptValidationError,
    node_errors,
)
from rp_pipeline.integrations.comfyui.follow import PromptFollower
from rp_pipeline.integrations.comfyui.results import OutputFile, Submission

log = logging.getLogger(__name__)

# ComfyUI refuses a request body over `--max-upload-size` (default 100 MB) with HTTP 413.
DEFAULT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
# What the multipart framing around the image adds to that body (boundaries, part headers).
_MULTIPART_ROOM = 4096
# Where uploaded start images go in ComfyUI's input dir (LoadImage lists subfolders too).
UPLOAD_SUBFOLDER = "rp_inputs"


class ComfyUIClient(PromptFollower):
    """Client for one ComfyUI server. Thread-compatible, not thread-safe (one per worker)."""

    def __init__(
        self,
        base_url: str,
        client_id: str | None = None,
        *,
        request_timeout_s: float = 30.0,
        poll_interval_s: float = 2.0,
        ws_connect_timeout_s: float = 10.0,
        unreachable_grace_s: float = 120.0,
        queue_check_s: float = 15.0,
        prompt_deadline_s: float = 3600.0,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        upload_attempts: int = 3,
        upload_retry_pause_s: float = 2.0,
        session: requests.Session | None = None,
        token: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id or uuid.uuid4().hex
        self.request_timeout_s = request_timeout_s
        self.poll_interval_s = poll_interval_s
        self.ws_connect_timeout_s = ws_connect_timeout_s
        # While waiting, ride out proxy 524s / restarts this long before giving up.
        self.unreachable_grace_s = unreachable_grace_s
        self._outage_since = None
        self._on_outage = None  # wait()'s hook
        # How often wait() confirms the prompt is still queued (a restarted ComfyUI forgets it).
        self.queue_check_s = queue_check_s
        self._last_queue_check = 0.0
        self.prompt_deadline_s = prompt_deadline_s  # wait()'s default deadline
        self.max_upload_bytes = max_upload_bytes
        self.upload_attempts = upload_attempts
        self.upload_retry_pause_s = upload_retry_pause_s
        self.session = session or requests.Session()
        # The pod's proxy refuses requests without the pod's token (HTTP and the /ws upgrade).
        self._auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session.headers.update(self._auth_headers)
        # Kept open between wait() calls: events of the next prompt queue up in it meanwhile.
        self._ws = None
        # Prompts whose end this socket announced while we waited for another one.
        self._ended = deque(maxlen=1000)

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url!r}, client_id={self.client_id!r})"

    def __enter__(self) -> ComfyUIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plain HTTP --------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.request_timeout_s)
        try:
            return self.session.request(method, self.base_url + path, **kwargs)
        except requests.RequestException as ex:
            raise ComfyUIUnavailable(f"cannot reach ComfyUI at {self.base_url}: {ex}") from ex

    def is_ready(self) -> bool:
        """True when ComfyUI answers `/system_stats` (RUNNING is not ready; this is)."""
        try:
            response = self.session.get(
                self.base_url + "/system_stats", timeout=min(self.request_timeout_s, 10)
            )
        except requests.RequestException:
            return False
        return response.status_code == 200

    def submit(self, workflow: dict[str, Any]) -> Submission:
        """Queue an API-format workflow. Raises PromptValidationError on HTTP 400.

        The event socket is opened first (as ComfyUI's own frontend does), so wait() hears the
        prompt from its first event; without a socket wait() still works, by polling.
        """
        if self._ws is None:
            self._ws = self._connect_ws(time.monotonic() + self.ws_connect_timeout_s)
        submitted_at = time.time()
        response = self._request(
            "POST", "/prompt", json={"prompt": workflow, "client_id": self.client_id}
        )
        if response.status_code == 400 and _is_json(response):
            body = response.json()
            raise PromptValidationError(
                body.get("error") or {}, node_errors(body.get("node_errors") or {})
            )
        if response.status_code != 200:
            raise ComfyUIError(
                f"POST /prompt answered HTTP {response.status_code}: {_snippet(response)}"
            )
        body = response.json()
        if body.get("node_errors"):
            # Accepted, but some output branches were dropped: say which.
            for err in node_errors(body["node_errors"]):
                log.warning("ComfyUI dropped an output branch: %s", err)
        log.info(
            "queued prompt %s (#%s) on %s", body["prompt_id"], body.get("number"), self.base_url
        )
        return Submission(str(body["prompt_id"]), int(body.get("number", 0)), submitted_at)

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt, or None while it is queued/running."""
        response = self._request("GET", f"/history/{prompt_id}")
        if response.status_code >= 500:
            raise ComfyUIUnavailable(
                f"GET /history/{prompt_id} answered HTTP {response.status_code}: "
                f"{_snippet(response)}"
            )
        if response.status_code != 200 or not _is_json(response):
            raise ComfyUIError(
                f"GET /history/{prompt_id} answered HTTP {response.status_code}: "
                f"{_snippet(response)}"
            )
        entry = response.json().get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def queue(self) -> dict[str, Any]:
        response = self._request("GET", "/queue")
        if response.status_code != 200:
            raise ComfyUIError(f"GET /queue answered HTTP {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the running prompt (only `prompt_id` if given); queued prompts still run."""
        payload = {"prompt_id": prompt_id} if prompt_id else {}
        response = self._request("POST", "/interrupt", json=payload)
        if response.status_code != 200:
            raise ComfyUIError(f"POST /interrupt answered HTTP {response.status_code}")

    def upload_image(
        self,
        image: str | os.PathLike[str] | bytes,
        suffix: str = ".png",
        subfolder: str = UPLOAD_SUBFOLDER,
    ) -> str:
        """Upload a start image into ComfyUI's input dir; returns what a LoadImage node takes.

        The file is named by its content (`<sha256[:16]><suffix>`, suffix from the path if
        given one): uploading it again to the same server writes nothing (ComfyUI answers an
        existing same-bytes file by its name), and two different images never share a name.
        HTTP 4xx raises ComfyUIError at once; 5xx and connection errors are tried
        `upload_attempts` times before ComfyUIUnavailable.
        """
        if isinstance(image, bytes):
            data = image
        else:
            data, suffix = Path(image).read_bytes(), Path(image).suffix or suffix
        name = f"{hashlib.sha256(data).hexdigest()[:16]}{suffix.lower()}"
        if len(data) + _MULTIPART_ROOM > self.max_upload_bytes:
            raise ComfyUIError(
                f"start image {name} is {len(data)} bytes, over ComfyUI's upload limit of "
                f"{self.max_upload_bytes} bytes (--max-upload-size): use a smaller image"
            )
        for attempt in range(1, self.upload_attempts + 1):
            try:
                response = self._request(
                    "POST",
                    "/upload/image",
                    files={"image": (name, data, "application/octet-stream")},
                    # Not `overwrite`: an existing file with these bytes is then kept as it is.
                    data={"type": "input", "subfolder": subfolder},
                )
                if response.status_code < 500:
                    break
                problem: ComfyUIError = ComfyUIUnavailable(
                    f"uploading {name} answered HTTP {response.status_code}: {_snippet(response)}"
                )
            except ComfyUIUnavailable as exc:
                problem = exc
            if attempt == self.upload_attempts:
                raise problem
            log.info("upload of %s failed (%s); trying again", name, problem)
            time.sleep(self.upload_retry_pause_s * attempt)
        if response.status_code != 200 or not _is_json(response):
            raise ComfyUIError(
                f"uploading {name} answered HTTP {response.status_code}: {_snippet(response)}"
            )
        body = response.json()
        uploaded = str(body["name"])
        return f"{body['subfolder']}/{uploaded}" if body.get("subfolder") else uploaded

    def download(self, output: OutputFile, dest_path: str | os.PathLike[str]) -> Path:
        """Stream one output via `/view` to dest_path (a file, or a directory to put it in)."""
        _check_safe_name(output.filename, output.subfolder)
        dest = Path(dest_path)
        if dest.is_dir():
            dest = dest / output.filename
        params = {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}
        partial = dest.with_name(dest.name + ".part")
        response = self._request("GET", "/view", params=params, stream=True)
        try:
            if response.status_code != 200:
                raise ComfyUIError(
                    f"GET /view {output.relative_path} answered HTTP {response.status_code}"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as fh:
                for chunk in response.iter_content(chunk_size=1 << 20):
                    fh.write(chunk)
            os.replace(partial, dest)
        finally:
            response.close()
            partial.unlink(missing_ok=True)
        return dest


def _check_safe_name(filename: str, subfolder: str) -> None:
    """Refuse names that would escape the destination or ComfyUI's folders."""
    if (
        not filename
        or filename in (".", "..")
        or "/" in filename
        or "\\" in filename
        or "\x00" in filename
    ):
        raise ComfyUIError(f"unsafe output file name {filename!r}")
    parts = PurePosixPath(subfolder.replace("\\", "/")).parts
    if subfolder.startswith(("/", "\\")) or ".." in parts:
        raise ComfyUIError(f"unsafe output subfolder {subfolder!r}")


def _seconds(message: dict[str, Any] | None) -> float | None:
    if not message or "timestamp" not in message:
        return None
    return float(message["timestamp"]) / 1000.0


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "")


def _snippet(response: requests.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200] or "(empty body)"
