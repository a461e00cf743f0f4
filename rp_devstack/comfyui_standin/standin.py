"""`ComfyStandin`: run the stand-in server in-process on its own thread and event loop."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from rp_devstack.comfyui_standin.server import StandinServer

log = logging.getLogger(__name__)

FAULT_ENV = "COMFY_STANDIN_FAULT"


class ComfyStandin:
    """A ComfyUI stand-in bound to a loopback port.

    `fault` (None, "execution_error", "oom", "hang") defaults to `$COMFY_STANDIN_FAULT`; it can be
    changed while running via the `fault` attribute. `models` maps model folder -> file names the
    stand-in "has" (default: the files the shipped workflows load; `{}` simulates a pod whose
    models are missing). `input_dir` and `temp_dir` default to `input` and `temp` beside the
    output dir, ComfyUI's own layout: the stand-in then writes only under its caller's folder,
    never into the system temp dir, so nothing outlives whoever made that folder. `gpu_meter`
    is a file that gets a line per sampler step (`Executor`), for benchmarks. `catalogues` are
    `/object_info` snapshot files whose nodes (custom ones) are added to the core catalogue
    (default: `$COMFYUI_STANDIN_CATALOGUE`, see `catalogue`); a bad one raises `CatalogueError`.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike[str],
        input_dir: str | os.PathLike[str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        step_seconds: float = 0.01,
        fault: str | None = None,
        models: dict[str, list[str]] | None = None,
        temp_dir: str | os.PathLike[str] | None = None,
        gpu_meter: str | os.PathLike[str] | None = None,
        catalogues: Sequence[str | os.PathLike[str]] | None = None,
    ) -> None:
        output = Path(output_dir)
        self.server = StandinServer(
            output_dir=output,
            input_dir=Path(input_dir) if input_dir else output.parent / "input",
            temp_dir=Path(temp_dir) if temp_dir else output.parent / "temp",
            step_seconds=step_seconds,
            fault=fault if fault is not None else os.environ.get(FAULT_ENV) or None,
            models=models,
            gpu_meter=Path(gpu_meter) if gpu_meter else None,
            catalogues=None if catalogues is None else [Path(p) for p in catalogues],
        )
        self.host = host
        self.port = port
        self.base_url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def fault(self) -> str | None:
        return self.server.fault

    @fault.setter
    def fault(self, value: str | None) -> None:
        self.server.fault = value

    @property
    def output_dir(self) -> Path:
        return self.server.output_dir

    @property
    def input_dir(self) -> Path:
        return self.server.input_dir

    @property
    def websocket_enabled(self) -> bool:
        return self.server.websocket_enabled

    @websocket_enabled.setter
    def websocket_enabled(self, value: bool) -> None:
        self.server.websocket_enabled = value

    def drop_websockets(self) -> None:
        """Cut every open /ws connection (as a proxy or network blip would)."""
        self.server.drop_websockets()

    def start(self) -> str:
        """Start serving; returns the base URL (e.g. http://127.0.0.1:8188)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as ex:  # surface bind errors to start()
                errors.append(ex)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=run, name="comfy-standin", daemon=True)
        self._thread.start()
        ready.wait(timeout=30)
        if errors:
            raise errors[0]
        return self.base_url

    async def _serve(self) -> None:
        self.server.start_worker()
        self._runner = web.AppRunner(self.server.make_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr,attr-defined]
        self.port = sockets[0].getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        log.info("ComfyUI stand-in listening on %s (output %s)", self.base_url, self.output_dir)

    async def _shutdown(self) -> None:
        self.server.stop_worker()
        for outbox in list(self.server.sockets.values()):
            outbox.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)

    def __enter__(self) -> ComfyStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
