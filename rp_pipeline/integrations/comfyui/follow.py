"""Following a prompt to its end: events from `/ws?clientId=...`, the result from `/history`.

The RunPod proxy cuts any request at ~100 s, so nothing here holds one long request: the socket
is read with short timeouts, reconnected when it drops, and `/history` is polled whenever the
socket is unavailable (or quiet for a while, which also covers events sent before we connected).
History is the source of truth for the result.

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
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import websocket

from rp_pipeline.integrations.comfyui.errors import (
    ComfyUITimeout,
    ComfyUIUnavailable,
    PromptVanished,
)
from rp_pipeline.integrations.comfyui.results import PromptResult, prompt_result

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, str, int, int], None]
"""on_progress(prompt_id, node_id, value, max): one call per sampler step."""


class PromptFollower:
    """The waiting half of `ComfyUIClient` (which sets these attributes and does the HTTP)."""

    base_url: str
    client_id: str
    poll_interval_s: float
    ws_connect_timeout_s: float
    unreachable_grace_s: float
    queue_check_s: float
    prompt_deadline_s: float
    _auth_headers: dict[str, str]
    _outage_since: float | None
    _on_outage: Callable[[ComfyUIUnavailable], None] | None
    _last_queue_check: float
    # Kept open between wait() calls: events of the next prompt queue up in it meanwhile.
    _ws: websocket.WebSocket | None
    # Prompts whose end this socket announced while we waited for another one.
    _ended: deque[str]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def queue(self) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        """Close the event socket (a later wait() reopens it)."""
        if self._ws is not None:
            _close_quietly(self._ws)
            self._ws = None

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
        return prompt_result(prompt_id, entry)

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


def _close_quietly(ws: websocket.WebSocket) -> None:
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.close()
