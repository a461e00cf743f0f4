"""ComfyUIClient against the exact bytes real ComfyUI 0.3.64 sent (recorded transcripts).

A small replay server answers `POST /prompt`, `/ws`, `/history/{id}` and `/queue` with what the
real server answered in each recording, in the recorded order, so the client's reading of real
events and history (cache hits included) is checked without the stand-in in between.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.results import OutputFile

from .test_contract import FIXTURES, fixture

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "INDEX.json").is_file(), reason="recorded ComfyUI transcripts not found"
)


class Replay:
    """Serves one recording; history answers `{}` until the recorded events were all sent."""

    def __init__(self, recording: dict[str, Any]) -> None:
        self.recording = recording
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._posted = asyncio.Event()
        self._replayed = False
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/prompt", self._prompt)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/history/{prompt_id}", self._history)
        app.router.add_get("/queue", self._queue)
        return app

    async def _prompt(self, request: web.Request) -> web.Response:
        self._posted.set()
        return web.json_response(self.recording["post_prompt"]["response"]["json"])

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first, *rest = self.recording["ws"]["messages"]
        await ws.send_str(json.dumps({"type": first["type"], "data": first["data"]}))
        await self._posted.wait()
        for message in rest:
            if message["kind"] == "text":
                await ws.send_str(json.dumps({"type": message["type"], "data": message["data"]}))
        self._replayed = True
        async for _ in ws:  # keep the socket open until the client closes it
            pass
        return ws

    async def _history(self, request: web.Request) -> web.Response:
        answer = self.recording["history"]["response"]["json"] if self._replayed else {}
        return web.json_response(answer)

    async def _queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.recording["queue_after"]["response"]["json"])

    def start(self) -> str:
        self._thread.start()
        runner = web.AppRunner(self._app())

        async def serve() -> str:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            return f"http://127.0.0.1:{port}"

        self._runner = runner
        self.base_url = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(30)
        return self.base_url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def replay(request: pytest.FixtureRequest) -> Iterator[Replay]:
    server = Replay(fixture(request.param))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(replay: Replay) -> tuple[Any, list[tuple[str, str, int, int]]]:
    progress: list[tuple[str, str, int, int]] = []
    with ComfyUIClient(replay.base_url, poll_interval_s=0.2) as client:
        workflow = replay.recording["post_prompt"]["request"]["json"]["prompt"]
        submission = client.submit(workflow)
        result = client.wait(submission.prompt_id, 30, on_progress=lambda *a: progress.append(a))
    return result, progress


@pytest.mark.parametrize("replay", ["video_run1"], indirect=True)
def test_cold_run(replay: Replay) -> None:
    result, _ = run(replay)
    assert result.status == "success"
    assert result.outputs == [
        OutputFile("3", "fixture_00001_.mp4", "video", "output", animated=True, cached=False)
    ]
    assert (result.cached, result.no_new_output, result.cached_nodes) == (False, False, [])
    assert result.generation_time_s == pytest.approx(0.013)  # execution_start -> _success


@pytest.mark.parametrize("replay", ["video_run2_identical"], indirect=True)
def test_identical_prompt_answered_from_cache_is_flagged(replay: Replay) -> None:
    """Real ComfyUI says "success" and reports the first run's file again; nothing new exists."""
    result, _ = run(replay)
    assert result.status == "success"
    assert result.outputs == [
        OutputFile("3", "fixture_00001_.mp4", "video", "output", animated=True, cached=True)
    ]
    assert (result.cached, result.no_new_output, result.new_outputs) == (True, True, [])
    assert result.cached_nodes == ["1", "2", "3"]


@pytest.mark.parametrize("replay", ["video_run3_new_prefix"], indirect=True)
def test_new_prefix_reruns_only_the_save_node(replay: Replay) -> None:
    result, _ = run(replay)
    assert result.outputs[0].filename == "fixture_b_00001_.mp4"
    assert (result.cached, result.outputs[0].cached) == (False, False)
    assert result.cached_nodes == ["1", "2"]


@pytest.mark.parametrize("replay", ["progress_upscale_run"], indirect=True)
def test_progress_events(replay: Replay) -> None:
    result, progress = run(replay)
    assert result.status == "success"
    prompt_id = result.prompt_id
    assert progress == [(prompt_id, "3", step, 4) for step in range(1, 5)]
