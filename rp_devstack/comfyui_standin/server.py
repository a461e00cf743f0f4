"""The stand-in's aiohttp server: ComfyUI's HTTP + WebSocket API with the recorded shapes.

Routes follow ComfyUI's `server.py` (0.3.64) and answer identically under `/api/`. One worker
thread runs queued prompts one at a time (as ComfyUI's prompt_worker does) and hands events back
to the event loop, which sends them only to the socket of the client id that queued the prompt
(`status` goes to everyone); a socket with another client id hears nothing of the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import mimetypes
import os
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from rp_devstack.comfyui_standin.catalogue import (
    DEFAULT_MODELS,
    IMAGE_INPUT_NODES,
    MODEL_EXTENSIONS,
    MODEL_FOLDERS,
    MODELS_DIR_ENV,
    build_catalogue,
    load_base_catalogue,
    snapshot_paths_from_env,
)
from rp_devstack.comfyui_standin.executor import FAULTS, Executor, QueueItem, annotated_path
from rp_devstack.comfyui_standin.validation import CustomCheck, PromptValidator

log = logging.getLogger(__name__)

COMFYUI_VERSION = "0.3.64"
MAX_UPLOAD_SIZE = 104857600
FEATURES = {"supports_preview_metadata": True, "max_upload_size": MAX_UPLOAD_SIZE}


class StandinServer:
    """State + routes. Build with `make_app()`; call `start_worker()` inside the running loop."""

    def __init__(
        self,
        output_dir: Path,
        input_dir: Path,
        temp_dir: Path,
        step_seconds: float = 0.01,
        fault: str | None = None,
        models: dict[str, list[str]] | None = None,
        gpu_meter: Path | None = None,
        catalogues: Sequence[Path] | None = None,
    ) -> None:
        # Extra node snapshots over the core catalogue (None: `$COMFYUI_STANDIN_CATALOGUE`);
        # read now, so a bad file stops the start with its reason rather than a later prompt.
        self.snapshots = list(snapshot_paths_from_env() if catalogues is None else catalogues)
        load_base_catalogue(self.snapshots)
        self.output_dir = output_dir.resolve()
        self.input_dir = input_dir.resolve()
        self.temp_dir = temp_dir.resolve()
        for folder in (self.output_dir, self.input_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.models = {
            k: list(v) for k, v in (DEFAULT_MODELS if models is None else models).items()
        }
        # A pod's models folder (local pods set it): its files are listed on top of `models`,
        # read at each request as ComfyUI's folder_paths does, so a file fetched at boot counts.
        models_dir = os.environ.get(MODELS_DIR_ENV)
        self.models_dir = Path(models_dir) if models_dir else None
        self.number = 0
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        # One outgoing queue per socket keeps each client's messages strictly in order.
        self.sockets: dict[str, asyncio.Queue[str | None]] = {}
        self.last_node_by_client: dict[str, str] = {}
        self.lock = threading.Lock()
        self.work = threading.Condition(self.lock)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor = Executor(
            self.output_dir,
            self.input_dir,
            self.temp_dir,
            self.catalogue,
            self.send_sync,
            step_seconds,
            gpu_meter,
        )
        self.fault = fault
        self._stopping = False
        # Knobs for tests: refuse websocket upgrades (like a proxy that does), count connects.
        self.websocket_enabled = True
        self.ws_connections: dict[str, int] = {}
        # Answer the next N `/history/{id}` requests with 524, as the RunPod proxy does.
        self.history_524_remaining = 0
        self._worker: threading.Thread | None = None

    # --- knobs -------------------------------------------------------------------------
    @property
    def fault(self) -> str | None:
        return self.executor.fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        if value not in (None, "", *FAULTS):
            raise ValueError(f"unknown fault {value!r}; choose one of {', '.join(FAULTS)}")
        self.executor.fault = value or None

    def catalogue(self) -> dict[str, Any]:
        return build_catalogue(self.installed_models(), self._input_files(), self.snapshots)

    def installed_models(self) -> dict[str, list[str]]:
        """`models` plus the model files under `models_dir/<folder>/` (subfolders as
        `sub/name`, as ComfyUI lists them; only its model file extensions, so no .part file)."""
        if self.models_dir is None:
            return self.models
        found = {k: list(v) for k, v in self.models.items()}
        for folder in MODEL_FOLDERS:
            root = self.models_dir / folder
            if not root.is_dir():
                continue
            names = found.setdefault(folder, [])
            for path in sorted(root.rglob("*")):
                rel = path.relative_to(root).as_posix()
                if path.is_file() and path.suffix in MODEL_EXTENSIONS and rel not in names:
                    names.append(rel)
        return found

    def _input_files(self) -> list[str]:
        """LoadImage's choices, as ComfyUI lists them: the files directly in input/ (not in
        subfolders) whose extension's MIME type is an image."""
        names = [entry.name for entry in os.scandir(self.input_dir) if entry.is_file()]
        return [name for name in names if _content_type(name) == "image"]

    def annotated_path(self, name: str) -> Path:
        return annotated_path(name, self.input_dir, self.output_dir, self.temp_dir)

    def _validator(self) -> PromptValidator:
        def check_image(value: Any) -> bool | str:
            # LoadImage(Mask).VALIDATE_INPUTS: the file must exist (any subfolder, no list check).
            if self.annotated_path(str(value)).exists():
                return True
            return f"Invalid image file: {value}"

        checks: dict[str, dict[str, CustomCheck]] = {
            node: {"image": check_image} for node in IMAGE_INPUT_NODES
        }
        return PromptValidator(self.catalogue(), checks)

    # --- messaging ---------------------------------------------------------------------
    def send_sync(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """Thread-safe: queue a message for one client (or everyone when sid is None)."""
        if event == "executing" and sid is not None:
            node = data.get("node")
            if node is None:
                self.last_node_by_client.pop(sid, None)
            else:
                self.last_node_by_client[sid] = node
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._send_now, event, data, sid)

    def _send_now(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        text = json.dumps({"type": event, "data": data})
        targets = list(self.sockets.values()) if sid is None else [self.sockets.get(sid)]
        for outbox in targets:
            if outbox is not None:
                outbox.put_nowait(text)

    def queue_info(self) -> dict[str, Any]:
        remaining = len(self.pending) + (1 if self.running else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    def _queue_updated(self) -> None:
        self.send_sync("status", {"status": self.queue_info()}, None)

    # --- worker ------------------------------------------------------------------------
    def start_worker(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._worker = threading.Thread(target=self._work_loop, name="standin-worker", daemon=True)
        self._worker.start()

    def stop_worker(self) -> None:
        with self.work:
            self._stopping = True
            self.executor.interrupt_flag.set()
            self.work.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=10)

    def _work_loop(self) -> None:
        while True:
            with self.work:
                while not self.pending and not self._stopping:
                    self.work.wait()
                if self._stopping:
                    return
                item = self.pending.pop(0)
                self.running = item
                self._queue_updated()
            try:
                entry = self.executor.execute(item)
            except Exception:  # never let the worker die: record the prompt as failed
                log.exception("stand-in executor crashed on %s", item.prompt_id)
                entry = {
                    "outputs": {},
                    "status": {"status_str": "error", "completed": False, "messages": []},
                    "meta": {},
                }
            with self.work:
                self.history[item.prompt_id] = {"prompt": item.as_list(), **entry}
                self.running = None
                self._queue_updated()
            client_id = item.extra_data.get("client_id")
            if client_id is not None:
                self.send_sync("executing", {"node": None, "prompt_id": item.prompt_id}, client_id)

    # --- routes ------------------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE)
        routes = [
            web.get("/ws", self.ws),
            web.get("/prompt", self.get_prompt),
            web.post("/prompt", self.post_prompt),
            web.get("/queue", self.get_queue),
            web.post("/queue", self.post_queue),
            web.get("/history", self.get_history),
            web.post("/history", self.post_history),
            web.get("/history/{prompt_id}", self.get_history_item),
            web.get("/view", self.view),
            web.post("/upload/image", self.upload_image),
            web.get("/system_stats", self.system_stats),
            web.get("/object_info", self.object_info),
            web.get("/object_info/{node_class}", self.object_info_one),
            web.post("/interrupt", self.interrupt),
            web.get("/features", self.features),
            web.get("/models", self.models_list),
            web.get("/models/{folder}", self.models_folder),
            web.get("/embeddings", self.embeddings),
        ]
        for route in routes:
            app.router.add_route(route.method, route.path, route.handler)
            app.router.add_route(route.method, "/api" + route.path, route.handler)
        return app

    def drop_websockets(self) -> None:
        """Close every open socket from the server side (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._drop_all)

    def _drop_all(self) -> None:
        for outbox in list(self.sockets.values()):
            outbox.put_nowait(None)

    async def ws(self, request: web.Request) -> web.StreamResponse:
        if not self.websocket_enabled:
            return web.Response(status=503, text="websocket disabled (stand-in knob)")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
        self.ws_connections[sid] = self.ws_connections.get(sid, 0) + 1
        outbox: asyncio.Queue[str | None] = asyncio.Queue()
        # Like ComfyUI, a reconnect with the same clientId takes over the messages; the older
        # socket stays open but receives nothing more.
        self.sockets[sid] = outbox
        outbox.put_nowait(
            json.dumps({"type": "status", "data": {"status": self.queue_info(), "sid": sid}})
        )
        # On reconnect, ComfyUI tells the running prompt's client which node is executing.
        last_node = self.last_node_by_client.get(sid)
        if last_node is not None:
            outbox.put_nowait(json.dumps({"type": "executing", "data": {"node": last_node}}))
        sender = asyncio.ensure_future(_pump(ws, outbox))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_client_message(outbox, msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is outbox:
                self.sockets.pop(sid, None)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sender
        return ws

    def _on_client_message(self, outbox: asyncio.Queue[str | None], text: str) -> None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return
        if isinstance(data, dict) and data.get("type") == "feature_flags":
            outbox.put_nowait(json.dumps({"type": "feature_flags", "data": FEATURES}))

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        # Malformed JSON raises here and aiohttp answers 500 text/plain, as ComfyUI does.
        json_data = await request.json()
        if not isinstance(json_data, dict):
            raise web.HTTPInternalServerError()
        if "prompt" not in json_data:
            error: dict[str, Any] | None = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = json_data["prompt"]
        prompt_id = str(json_data.get("prompt_id") or uuid.uuid4())
        if not isinstance(prompt, dict):
            raise web.HTTPInternalServerError()
        valid, error, good_outputs, node_errors = self._validator().validate(prompt)
        if not valid:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        extra_data = dict(json_data.get("extra_data") or {})
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        with self.work:
            number = json_data.get("number", self.number)
            if json_data.get("front"):
                number = -number
            self.number += 1
            self.pending.append(QueueItem(number, prompt_id, prompt, extra_data, good_outputs))
            self.pending.sort(key=lambda it: it.number)
            self._queue_updated()
            self.work.notify_all()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": node_errors}
        )

    async def get_queue(self, request: web.Request) -> web.Response:
        with self.lock:
            running = [self.running.as_list()] if self.running else []
            pending = [item.as_list() for item in self.pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        with self.lock:
            if json_data.get("clear"):
                self.pending.clear()
            for prompt_id in json_data.get("delete", []):
                self.pending = [it for it in self.pending if it.prompt_id != prompt_id]
        self._queue_updated()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.rel_url.query.get("max_items")
        if max_items is not None:
            items = items[-int(max_items) :]
        return web.json_response(dict(items))

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("clear"):
            self.history.clear()
        for prompt_id in json_data.get("delete", []):
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def get_history_item(self, request: web.Request) -> web.Response:
        if self.history_524_remaining > 0:
            self.history_524_remaining -= 1
            return web.Response(status=524, text="error code: 524")
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    def _typed_dir(self, kind: str) -> Path | None:
        return {"output": self.output_dir, "input": self.input_dir, "temp": self.temp_dir}.get(kind)

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        filename = query.get("filename")
        if not filename:
            return web.Response(status=404)
        filename = os.path.normpath(filename)
        if not filename or filename.startswith(("/", "..")) or ".." in Path(filename).parts:
            return web.Response(status=400)
        base = self._typed_dir(query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        subfolder = query.get("subfolder", "")
        folder = (base / subfolder).resolve() if subfolder else base
        if os.path.commonpath((str(folder), str(base))) != str(base):
            return web.Response(status=403)
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{path.name}"'})

    async def upload_image(self, request: web.Request) -> web.Response:
        """`POST /upload/image`, step for step as ComfyUI's `image_upload` (server.py 0.3.64).

        Recorded answers: a usable `image` file part is stored as sent (bytes and extension
        are not checked) and answered `{"name", "subfolder", "type"}`; without it 400 with an
        empty body; `image` as a plain field, or a `type` other than input/temp/output, is an
        unhandled error in the real handler (500 text/plain from aiohttp); a name leaving the
        folder is 400. Without `overwrite` "true"/"1" (exactly), a taken name becomes
        `stem (i).ext`, the first `(i)` that is free or already holds the same bytes; a file
        with the same bytes is answered by its name and not written again.
        """
        post = await request.post()
        image = post.get("image")
        overwrite = post.get("overwrite")
        upload_type = post.get("type")
        upload_type = "input" if upload_type is None else str(upload_type)
        upload_dir = self._typed_dir(upload_type)
        if upload_dir is None:  # real: UnboundLocalError in get_dir_by_type
            raise UploadError(f"unknown upload type {upload_type!r}")
        if not image:
            return web.Response(status=400)
        if not isinstance(image, web.FileField):  # real: AttributeError on `image.file`
            raise UploadError("the image part has no file")
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = os.path.join(str(upload_dir), os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((str(upload_dir), filepath)) != str(upload_dir):
            return web.Response(status=400)
        os.makedirs(folder, exist_ok=True)
        content = image.file.read()
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, suffix = os.path.splitext(filename)
            index = 1
            while os.path.exists(filepath):
                if _same_bytes(filepath, content):
                    duplicate = True
                    break
                filename = f"{stem} ({index}){suffix}"
                filepath = os.path.join(folder, filename)
                index += 1
        if not duplicate:
            with open(filepath, "wb") as out:
                out.write(content)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": upload_type})

    async def system_stats(self, request: web.Request) -> web.Response:
        ram_total = 25 * 1024**3
        return web.json_response(
            {
                "system": {
                    "os": "posix",
                    "ram_total": ram_total,
                    "ram_free": ram_total // 2,
                    "comfyui_version": COMFYUI_VERSION,
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": "3.11 (rp_devstack ComfyUI stand-in)",
                    "pytorch_version": "none (stand-in)",
                    "embedded_python": False,
                    "argv": ["main.py", "--output-directory", str(self.output_dir)],
                },
                "devices": [
                    {
                        "name": "cpu",
                        "type": "cpu",
                        "index": None,
                        "vram_total": ram_total,
                        "vram_free": ram_total // 2,
                        "torch_vram_total": ram_total,
                        "torch_vram_free": ram_total // 2,
                    }
                ],
            }
        )

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.catalogue())

    async def object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self.catalogue().get(name)
        return web.json_response({name: info} if info is not None else {})

    async def interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except (json.JSONDecodeError, ValueError):
            json_data = {}
        prompt_id = json_data.get("prompt_id") if isinstance(json_data, dict) else None
        with self.lock:
            running_id = self.running.prompt_id if self.running else None
        if not prompt_id or prompt_id == running_id:
            self.executor.interrupt_flag.set()
        return web.Response(status=200)

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(FEATURES)

    async def models_list(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def models_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(sorted(self.installed_models().get(folder, [])))

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])


def _content_type(name: str) -> str | None:
    """The top-level MIME type of a file name (ComfyUI's `filter_files_content_types`)."""
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed.split("/")[0] if guessed else None


class UploadError(Exception):
    """Where the real upload handler fails with an unhandled error: aiohttp answers 500."""


def _same_bytes(path: str, content: bytes) -> bool:
    with open(path, "rb") as existing:
        return hashlib.sha256(existing.read()).digest() == hashlib.sha256(content).digest()


async def _pump(ws: web.WebSocketResponse, outbox: asyncio.Queue[str | None]) -> None:
    """Send queued messages in order; None means close (drop_websockets, shutdown)."""
    while True:
        text = await outbox.get()
        if text is None or ws.closed:
            await ws.close()
            return
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            return
