"""ComfyUI HTTP/WebSocket client (plain Python; the Dagster wrapper lives in comfyui_resource.py).

Submits API-format workflows with `POST /prompt`, follows progress over `/ws?clientId=...` and
reads the result from `/history/{prompt_id}`. The RunPod proxy cuts any request at ~100 s, so
nothing here holds one long request: the socket is read with short timeouts, reconnected when it
drops, and `/history` is polled whenever the socket is unavailable (or quiet for a while, which
also covers events sent before we connected). History is the source of truth for the result.

ComfyUI sends a prompt's events only to the socket of the client id that queued it, so wait with
the client (instance, or at least `client_id`) that submitted: any other client hears nothing and
notices the end only by polling (measured on ComfyUI 0.3.64: ~2 s late, no progress at all). One
client can submit a batch and then `wait()` for each prompt in turn; its socket stays open
between waits (close it with `close()` or a `with` block), so no event is lost in between.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import requests
import websocket

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, str, int, int], None]
"""on_progress(prompt_id, node_id, value, max): one call per sampler step."""

Status = Literal["success", "error", "interrupted"]

# Keys under which ComfyUI nodes report files in their UI output.
_FILE_KEYS = ("images", "gifs", "videos", "audio")


class ComfyUIError(Exception):
    """Any failure talking to ComfyUI or running a prompt on it."""


@dataclass(frozen=True)
class NodeError:
    node_id: str
    class_type: str
    type: str
    message: str
    details: str

    def __str__(self) -> str:
        detail = f" ({self.details})" if self.details else ""
        return f"node {self.node_id} ({self.class_type}): {self.message}{detail}"


class PromptValidationError(ComfyUIError):
    """ComfyUI refused the graph (HTTP 400); `node_errors` names every failing node."""

    def __init__(self, error: dict[str, Any], node_errors: list[NodeError]) -> None:
        self.error_type = str(error.get("type", ""))
        self.error_message = str(error.get("message", ""))
        self.node_errors = node_errors
        lines = [f"ComfyUI rejected the workflow: {self.error_message} [{self.error_type}]"]
        if not node_errors and error.get("details"):
            lines.append(f"  {error['details']}")
        lines += [f"  {err}" for err in node_errors]
        super().__init__("\n".join(lines))


class PromptExecutionError(ComfyUIError):
    """A node raised while the prompt ran (ComfyUI `execution_error`)."""

    def __init__(
        self,
        prompt_id: str,
        node_id: str,
        class_type: str,
        message: str,
        exception_type: str = "",
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.class_type = class_type
        self.message = message
        self.exception_type = exception_type
        first_line = message.strip().splitlines()[0] if message.strip() else "(no message)"
        super().__init__(
            f"prompt {prompt_id} failed in node {node_id} ({class_type}): "
            f"{exception_type + ': ' if exception_type else ''}{first_line}"
        )

    @property
    def is_out_of_memory(self) -> bool:
        return "OutOfMemory" in self.exception_type or "out of memory" in self.message.lower()


class ComfyUITimeout(ComfyUIError):
    """The prompt did not finish before the caller's deadline (it may still be queued/running)."""

    def __init__(self, prompt_id: str, deadline_s: float, base_url: str) -> None:
        self.prompt_id = prompt_id
        self.deadline_s = deadline_s
        super().__init__(
            f"prompt {prompt_id} did not finish within {deadline_s:.0f} s on {base_url}"
        )


class PromptVanished(ComfyUIError):
    """ComfyUI no longer knows the prompt (neither queued, running nor in history): it was
    restarted, or the prompt was deleted from its queue. Only this prompt is lost."""

    def __init__(self, prompt_id: str, base_url: str) -> None:
        self.prompt_id = prompt_id
        super().__init__(
            f"prompt {prompt_id} is neither queued nor finished on {base_url}: "
            "ComfyUI restarted or the prompt was deleted from its queue"
        )


class ComfyUIUnavailable(ComfyUIError):
    """ComfyUI (or the proxy in front of it) did not answer, or answered 5xx / 524."""


@dataclass(frozen=True)
class Submission:
    prompt_id: str
    number: int
    submitted_at: float


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    type: str
    animated: bool = False
    # True when ComfyUI answered the node from its cache: the file is an EARLIER prompt's file,
    # reported again; this prompt wrote nothing new for it.
    cached: bool = False

    @property
    def relative_path(self) -> str:
        """Path relative to ComfyUI's output (or temp/input) directory."""
        return (
            str(PurePosixPath(self.subfolder) / self.filename) if self.subfolder else self.filename
        )


@dataclass(frozen=True)
class PromptResult:
    prompt_id: str
    status: Status
    outputs: list[OutputFile]
    started_at: float | None
    finished_at: float | None
    generation_time_s: float | None
    cached_nodes: list[str] = field(default_factory=list)

    @property
    def new_outputs(self) -> list[OutputFile]:
        """The files this prompt actually wrote (outputs not served from ComfyUI's cache)."""
        return [out for out in self.outputs if not out.cached]

    @property
    def cached(self) -> bool:
        """True when ComfyUI answered the whole prompt from its cache: it reports "success" with
        the files of an earlier identical prompt and wrote no new file (`no_new_output`)."""
        return bool(self.outputs) and not self.new_outputs

    @property
    def no_new_output(self) -> bool:
        """True when the prompt wrote no file at all (cached, or a graph without outputs)."""
        return not self.new_outputs


class ComfyUIClient:
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
        self._outage_since: float | None = None
        self._on_outage: Callable[[ComfyUIUnavailable], None] | None = None  # wait()'s hook
        # How often wait() confirms the prompt is still queued (a restarted ComfyUI forgets it).
        self.queue_check_s = queue_check_s
        self._last_queue_check = 0.0
        self.prompt_deadline_s = prompt_deadline_s  # wait()'s default deadline
        self.session = session or requests.Session()
        # The pod's proxy refuses requests without the pod's token (HTTP and the /ws upgrade).
        self._auth_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.session.headers.update(self._auth_headers)
        # Kept open between wait() calls: events of the next prompt queue up in it meanwhile.
        self._ws: websocket.WebSocket | None = None
        # Prompts whose end this socket announced while we waited for another one.
        self._ended: deque[str] = deque(maxlen=1000)

    def __repr__(self) -> str:
        return f"ComfyUIClient({self.base_url!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        """Close the event socket (a later wait() reopens it)."""
        if self._ws is not None:
            _close_quietly(self._ws)
            self._ws = None

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
                body.get("error") or {}, _node_errors(body.get("node_errors") or {})
            )
        if response.status_code != 200:
            raise ComfyUIError(
                f"POST /prompt answered HTTP {response.status_code}: {_snippet(response)}"
            )
        body = response.json()
        if body.get("node_errors"):
            # Accepted, but some output branches were dropped: say which.
            for err in _node_errors(body["node_errors"]):
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

    def upload_image(self, path: str | os.PathLike[str], overwrite: bool = True) -> str:
        """Upload into ComfyUI's input dir; returns the name to put in a LoadImage node."""
        source = Path(path)
        with source.open("rb") as fh:
            response = self._request(
                "POST",
                "/upload/image",
                files={"image": (source.name, fh, "application/octet-stream")},
                data={"type": "input", "overwrite": "true" if overwrite else "false"},
            )
        if response.status_code != 200 or not _is_json(response):
            raise ComfyUIError(
                f"uploading {source.name} answered HTTP {response.status_code}: {_snippet(response)}"
            )
        body = response.json()
        name = str(body["name"])
        return f"{body['subfolder']}/{name}" if body.get("subfolder") else name

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

    # --- waiting -----------------------------------------------------------------------
    def wait(
        self,
        prompt_id: str,
        deadline_s: float | None = None,
        on_progress: ProgressCallback | None = None,
        on_outage: Callable[[ComfyUIUnavailable], None] | None = None,
    ) -> PromptResult:
        """Follow a prompt until it ends and return its result (check `result.cached`).

        Raises PromptExecutionError (a node failed), PromptVanished (ComfyUI forgot the prompt,
        e.g. it restarted), ComfyUITimeout (deadline_s, default prompt_deadline_s, passed) or
        ComfyUIUnavailable (no answer for unreachable_grace_s). Progress comes from the socket
        of this client's id (only the submitting client id hears it); completion is always
        confirmed from `/history`. `on_outage` is called with each failed attempt to reach
        ComfyUI while the outage is shorter than the grace: a caller that can tell the server is
        gone for good (its pod was terminated or taken back) raises from it at once instead of
        waiting out the grace.
        """
        self._on_outage = on_outage
        try:
            return self._wait(prompt_id, deadline_s, on_progress)
        finally:
            self._on_outage = None

    def _wait(
        self, prompt_id: str, deadline_s: float | None, on_progress: ProgressCallback | None
    ) -> PromptResult:
        if deadline_s is None:
            deadline_s = self.prompt_deadline_s
        deadline = time.monotonic() + deadline_s
        self._outage_since = None
        self._last_queue_check = time.monotonic()
        # An open socket has held every event since the previous wait(): read the prompt's
        # progress from it rather than jumping to its history (which would skip that progress).
        following = self._ws is not None and prompt_id not in self._ended
        entry = None if following else self._poll_history(prompt_id)
        while entry is None:
            if time.monotonic() >= deadline:
                raise ComfyUITimeout(prompt_id, deadline_s, self.base_url)
            fresh = self._ws is None
            ws = self._ws or self._connect_ws(deadline)
            if ws is None:
                # Socket unavailable (e.g. a proxy refusing upgrades): poll history instead.
                time.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))
                entry = self._poll_history(prompt_id)
                continue
            self._ws = ws
            entry = self._follow_socket(ws, prompt_id, deadline, on_progress, fresh)
            if entry is None and self._ws is None:  # dropped: back off before reconnecting
                time.sleep(min(0.5, self.poll_interval_s, max(0.0, deadline - time.monotonic())))
        return self._result(prompt_id, entry)

    def _poll_history(self, prompt_id: str) -> dict[str, Any] | None:
        """history(), treating an outage shorter than unreachable_grace_s as 'not yet'."""
        try:
            entry = self.history(prompt_id)
        except ComfyUIUnavailable as ex:
            now = time.monotonic()
            if self._outage_since is None:
                self._outage_since = now
            if now - self._outage_since >= self.unreachable_grace_s:
                raise
            if self._on_outage is not None:
                self._on_outage(ex)
            log.info("ComfyUI unavailable while waiting (%s); retrying", ex)
            time.sleep(min(self.poll_interval_s, 1.0))
            return None
        self._outage_since = None
        if entry is None and time.monotonic() - self._last_queue_check >= self.queue_check_s:
            self._last_queue_check = time.monotonic()
            with contextlib.suppress(ComfyUIUnavailable):  # outages are handled above
                entry = self._unless_vanished(prompt_id)
        return entry

    def _unless_vanished(self, prompt_id: str) -> dict[str, Any] | None:
        """None while the prompt is queued or running; raise if ComfyUI no longer knows it."""
        queue = self.queue()
        items = list(queue.get("queue_running", [])) + list(queue.get("queue_pending", []))
        if any(len(item) > 1 and item[1] == prompt_id for item in items):
            return None
        # Queue first, then history: a prompt finishing in between is found in history.
        entry = self.history(prompt_id)
        if entry is None:
            raise PromptVanished(prompt_id, self.base_url)
        return entry

    def _connect_ws(self, deadline: float) -> websocket.WebSocket | None:
        url = self.base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        timeout = max(0.1, min(self.ws_connect_timeout_s, deadline - time.monotonic()))
        try:
            return websocket.create_connection(
                f"{url}/ws?clientId={self.client_id}",
                timeout=timeout,
                header=[f"{name}: {value}" for name, value in self._auth_headers.items()],
            )
        except (OSError, websocket.WebSocketException) as ex:
            log.info("ComfyUI websocket unavailable (%s); polling /history", ex)
            return None

    def _follow_socket(
        self,
        ws: websocket.WebSocket,
        prompt_id: str,
        deadline: float,
        on_progress: ProgressCallback | None,
        fresh: bool,
    ) -> dict[str, Any] | None:
        """Read events until the prompt ends (-> its history) or the socket drops (-> None,
        socket closed) or the deadline passes (-> None, socket kept)."""
        if fresh:
            # Events sent before we connected are lost: check history right after connecting
            # (and whenever the socket has been quiet for a poll interval). A reconnect may also
            # mean ComfyUI restarted, which forgets queued prompts: confirm the queue at once.
            self._last_queue_check = float("-inf")
            entry = self._poll_history(prompt_id)
            if entry is not None:
                return entry
        last_check = time.monotonic()
        while time.monotonic() < deadline:
            ws.settimeout(max(0.05, min(self.poll_interval_s, deadline - time.monotonic())))
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                raw = None
            except (OSError, websocket.WebSocketException) as ex:
                log.info("ComfyUI websocket dropped (%s); reconnecting", ex)
                self.close()
                return None
            if isinstance(raw, str) and raw:
                ended = self._handle_event(raw, prompt_id, on_progress)
                if ended:
                    return self._history_when_written(prompt_id, deadline)
            if time.monotonic() - last_check >= self.poll_interval_s:
                last_check = time.monotonic()
                entry = self._poll_history(prompt_id)
                if entry is not None:
                    return entry
        return None

    def _handle_event(self, raw: str, prompt_id: str, on_progress: ProgressCallback | None) -> bool:
        """Dispatch one socket message; True when it says our prompt has finished.

        Everything not about our prompt is skipped: `status` broadcasts, the `executing` replay
        without prompt id that ComfyUI sends on reconnect, other prompts' events, custom nodes'
        messages of any shape (binary preview frames never reach here: they are bytes).
        """
        try:
            message = json.loads(raw)
        except json.JSONDecodeError:
            return False
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or "prompt_id" not in data:
            return False
        kind = message.get("type")
        ended = (kind == "executing" and data.get("node") is None) or kind in (
            "execution_error",
            "execution_interrupted",
        )
        if data["prompt_id"] != prompt_id:
            if ended:
                self._ended.append(str(data["prompt_id"]))
            return False
        if kind == "progress" and on_progress is not None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                value, max_ = int(data["value"]), int(data["max"])
                on_progress(prompt_id, str(data.get("node")), value, max_)
        elif kind == "executing" and data.get("node") is not None:
            log.debug("prompt %s executing node %s", prompt_id, data["node"])
        return ended

    def _history_when_written(self, prompt_id: str, deadline: float) -> dict[str, Any] | None:
        # execution_error arrives before ComfyUI stores history; give it a moment, backing off
        # so a server that never writes it is not hammered until the deadline.
        pause = 0.05
        while True:
            entry = self._poll_history(prompt_id)
            if entry is not None or time.monotonic() >= deadline:
                return entry
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, self.poll_interval_s)

    def _result(self, prompt_id: str, entry: dict[str, Any]) -> PromptResult:
        status_block = entry.get("status") or {}
        messages = {event: data for event, data in status_block.get("messages", [])}
        started = _seconds(messages.get("execution_start"))
        finished_msg = (
            messages.get("execution_success")
            or messages.get("execution_error")
            or messages.get("execution_interrupted")
        )
        finished = _seconds(finished_msg)
        if "execution_error" in messages:
            err = messages["execution_error"]
            raise PromptExecutionError(
                prompt_id,
                str(err.get("node_id", "")),
                str(err.get("node_type", "")),
                str(err.get("exception_message", "")),
                str(err.get("exception_type", "")),
            )
        status: Status
        if "execution_interrupted" in messages:
            status = "interrupted"
        elif status_block.get("status_str") == "success" or status_block.get("completed"):
            status = "success"
        else:
            status = "error"
        cached = [str(n) for n in (messages.get("execution_cached") or {}).get("nodes", [])]
        outputs = _output_files(entry.get("outputs") or {}, set(cached))
        if outputs and all(out.cached for out in outputs):
            log.warning(
                "prompt %s was answered from ComfyUI's cache: its outputs are an earlier "
                "prompt's files and nothing new was written",
                prompt_id,
            )
        return PromptResult(
            prompt_id=prompt_id,
            status=status,
            outputs=outputs,
            started_at=started,
            finished_at=finished,
            generation_time_s=(finished - started) if started and finished else None,
            cached_nodes=cached,
        )


def _output_files(outputs: dict[str, Any], cached_nodes: set[str]) -> list[OutputFile]:
    """Files from history outputs: SaveVideo -> `images` + `animated`, VHS -> `gifs`; those of
    nodes in `cached_nodes` (ComfyUI's `execution_cached`) are marked `cached`."""
    files: list[OutputFile] = []
    for node_id, ui in outputs.items():
        animated_flags = ui.get("animated") or []
        for key in _FILE_KEYS:
            for index, item in enumerate(ui.get(key) or []):
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                if item.get("type", "output") == "temp":
                    continue  # previews live in ComfyUI's temp dir, not in the synced outputs
                if key == "gifs":
                    animated = True
                elif key == "images" and animated_flags:
                    animated = bool(animated_flags[min(index, len(animated_flags) - 1)])
                else:
                    animated = False
                files.append(
                    OutputFile(
                        node_id=str(node_id),
                        filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder", "")),
                        type=str(item.get("type", "output")),
                        animated=animated,
                        cached=str(node_id) in cached_nodes,
                    )
                )
    return files


def _node_errors(raw: dict[str, Any]) -> list[NodeError]:
    errors: list[NodeError] = []
    for node_id, info in raw.items():
        for err in info.get("errors", []):
            errors.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=str(info.get("class_type", "")),
                    type=str(err.get("type", "")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                )
            )
    return errors


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


def _close_quietly(ws: websocket.WebSocket) -> None:
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.close()
