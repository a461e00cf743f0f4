"""`rp-agent proxy` as a real process in front of the ComfyUI stand-in: strangers get 401 with
an empty body on every route (HTTP and the /ws upgrade, with and without /api), nothing of theirs
reaches ComfyUI, and the pod's token passes: a whole prompt run through ComfyUIClient, a streamed
multi-MB /view, WebSocket events, and the browser's ?token= -> cookie hand-over.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests
import websocket
from aiohttp import web
from PIL import Image

from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.ports import free_port
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV
from rp_pipeline.workflows import render_workflow

TOKEN = secrets.token_urlsafe(32)
WRONG = secrets.token_urlsafe(32)


class Proxy:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream_port: int, token: str | None = TOKEN) -> Proxy:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "RP_POD_TOKEN"}
        if token is not None:
            env["RP_POD_TOKEN"] = token
        log = tmp_path / f"proxy-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "rp_agent.cli", "proxy", "--listen", f"127.0.0.1:{port}",
                 "--upstream", f"127.0.0.1:{upstream_port}"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                return Proxy(process, port, log)
            except requests.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"proxy never listened: {log.read_text()}")

    try:
        yield start
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def proxy(comfyui_standin: ComfyStandin, start_proxy: Callable[..., Proxy]) -> Proxy:
    return start_proxy(comfyui_standin.port)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    return buffer.getvalue()


# (method, path, request kwargs): every ComfyUI route the pipeline or a browser uses.
ROUTES: list[tuple[str, str, dict]] = [
    ("GET", "/system_stats", {}),
    ("GET", "/queue", {}),
    ("GET", "/history", {}),
    ("GET", "/object_info", {}),
    ("GET", "/view?filename=secret.png&type=output", {}),
    ("POST", "/prompt", {"json": {"prompt": {}, "client_id": "stranger"}}),
    ("POST", "/upload/image", {"files": {"image": ("stranger.png", png_bytes(), "image/png")}}),
]
STRANGERS = {
    "no token": {},
    "wrong bearer": {"headers": {"Authorization": f"Bearer {WRONG}"}},
    "wrong cookie": {"cookies": {"rp_pod_token": WRONG}},
    "wrong query": {"params": {"token": WRONG}},
    "token as basic auth": {"auth": ("user", TOKEN)},
}


def assert_strangers_refused(base_url: str) -> None:
    for method, path, body in ROUTES:
        for who, creds in STRANGERS.items():
            reply = requests.request(
                method, base_url + path, timeout=10, allow_redirects=False, **body, **creds
            )
            assert reply.status_code == 401, (method, path, who, reply.status_code)
            assert reply.content == b"", (method, path, who)
            assert "set-cookie" not in reply.headers
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(base_url.replace("http", "ws") + "/ws", timeout=10)
    assert refused.value.status_code == 401


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_strangers_get_401_with_no_body_and_nothing_reaches_comfyui(
    proxy: Proxy, comfyui_standin: ComfyStandin, prefix: str
) -> None:
    (comfyui_standin.output_dir / "secret.png").write_bytes(png_bytes())
    assert_strangers_refused(proxy.url + prefix)

    direct = f"http://127.0.0.1:{comfyui_standin.port}"
    queue = requests.get(f"{direct}/queue", timeout=10).json()
    assert queue == {"queue_running": [], "queue_pending": []}
    assert requests.get(f"{direct}/history", timeout=10).json() == {}
    assert not (comfyui_standin.input_dir / "stranger.png").exists()


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_strangers_cannot_open_the_websocket(proxy: Proxy, prefix: str) -> None:
    ws_url = proxy.url.replace("http", "ws") + prefix + "/ws?clientId=stranger"
    attempts = {
        "no token": {},
        "wrong bearer": {"header": [f"Authorization: Bearer {WRONG}"]},
        "wrong cookie": {"cookie": f"rp_pod_token={WRONG}"},
    }
    for who, options in attempts.items():
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url, timeout=10, **options)
        assert refused.value.status_code == 401, who
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{ws_url}&token={WRONG}", timeout=10)
    assert refused.value.status_code == 401


@pytest.mark.parametrize("prefix", ["", "/api"])
def test_the_token_passes_on_every_route(
    proxy: Proxy, comfyui_standin: ComfyStandin, prefix: str
) -> None:
    (comfyui_standin.output_dir / "secret.png").write_bytes(png_bytes())
    auth = {"Authorization": f"Bearer {TOKEN}"}
    direct = f"http://127.0.0.1:{comfyui_standin.port}"
    for method, path, body in ROUTES:
        through = requests.request(
            method, proxy.url + prefix + path, headers=auth, timeout=30, **body
        )
        straight = requests.request(method, direct + prefix + path, timeout=30, **body)
        assert through.status_code == straight.status_code, (method, path, through.text)
        assert through.status_code < 500, (method, path)
        if method == "GET" and path != "/queue":
            assert through.content == straight.content, path
    assert (comfyui_standin.input_dir / "stranger.png").read_bytes() == png_bytes()

    ws = websocket.create_connection(
        proxy.url.replace("http", "ws") + prefix + "/ws?clientId=me",
        header=[f"Authorization: Bearer {TOKEN}"],
        timeout=10,
    )
    try:
        assert '"type": "status"' in ws.recv()
    finally:
        ws.close()


def test_a_whole_prompt_runs_through_the_proxy_with_websocket_events(
    proxy: Proxy, comfyui_standin: ComfyStandin
) -> None:
    client = ComfyUIClient(proxy.url, poll_interval_s=0.2, token=TOKEN)
    assert client.is_ready()
    assert not ComfyUIClient(proxy.url, token=WRONG).is_ready()
    rendered = render_workflow(
        "wan22_t2v_14b",
        {"prompt": "a fox", "width": 160, "height": 96, "frames": 17, "fps": 12, "steps": 4},
        request_id="through-proxy",
    )
    submission = client.submit(rendered.api_json)
    progress: list[tuple] = []
    result = client.wait(submission.prompt_id, 60, on_progress=lambda *a: progress.append(a))

    assert result.status == "success"
    assert progress, "no progress event came through the WebSocket bridge"
    assert comfyui_standin.server.ws_connections.get(client.client_id) == 1
    [output] = result.outputs
    downloaded = client.download(output, comfyui_standin.output_dir.parent / "dl")
    assert (
        downloaded.read_bytes() == (comfyui_standin.output_dir / output.relative_path).read_bytes()
    )


def test_a_large_view_download_streams_without_buffering(
    proxy: Proxy, comfyui_standin: ComfyStandin
) -> None:
    size = 96 * 1024 * 1024
    big = comfyui_standin.output_dir / "big.mp4"
    with open(big, "wb") as out:
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            out.write(block)
    expected = hashlib.sha256(big.read_bytes()).hexdigest()
    proxy_process = psutil.Process(proxy.process.pid)
    rss_before = proxy_process.memory_info().rss
    peak = rss_before

    digest = hashlib.sha256()
    with requests.get(
        f"{proxy.url}/api/view",
        params={"filename": "big.mp4", "type": "output"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        stream=True,
        timeout=60,
    ) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_content(1024 * 1024):
            digest.update(chunk)
            peak = max(peak, proxy_process.memory_info().rss)

    assert digest.hexdigest() == expected
    # A proxy that read the body whole would grow by the file's size.
    assert peak - rss_before < size // 3, (rss_before, peak)


def test_browser_trades_the_query_token_for_an_httponly_cookie(proxy: Proxy) -> None:
    browser = requests.Session()
    first = browser.get(
        f"{proxy.url}/api/queue", params={"token": TOKEN, "keep": "1"}, allow_redirects=False
    )
    assert first.status_code == 303
    assert first.headers["Location"] == "/api/queue?keep=1"  # the token leaves the URL
    cookie = first.headers["Set-Cookie"]
    assert cookie.startswith(f"rp_pod_token={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; behind RunPod's https proxy it is Secure

    second = browser.get(f"{proxy.url}/api/queue")
    assert second.status_code == 200 and "queue_running" in second.json()
    ws = websocket.create_connection(
        proxy.url.replace("http", "ws") + "/ws?clientId=browser",
        cookie=f"rp_pod_token={TOKEN}",
        timeout=10,
    )
    try:
        assert '"type": "status"' in ws.recv()
    finally:
        ws.close()

    behind_https = requests.get(
        f"{proxy.url}/", params={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"},
        allow_redirects=False, timeout=10,
    )  # fmt: skip
    assert "Secure" in behind_https.headers["Set-Cookie"]


def test_a_pod_without_token_refuses_everything(
    comfyui_standin: ComfyStandin, start_proxy: Callable[..., Proxy]
) -> None:
    for token in (None, "", "short"):
        proxy = start_proxy(comfyui_standin.port, token=token)
        for creds in ({}, {"headers": {"Authorization": "Bearer "}}, {"params": {"token": ""}}):
            reply = requests.get(f"{proxy.url}/system_stats", timeout=10, **creds)
            assert reply.status_code == 503, token
            assert "RP_POD_TOKEN" in reply.text
        assert "every request will be refused" in proxy.log.read_text()


def test_comfyui_never_sees_the_token_and_keeps_host_and_other_cookies(
    start_proxy: Callable[..., Proxy],
) -> None:
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append({**request.headers, "_query": request.query_string})
        return web.Response(text="ok")

    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(web.Application())
    runner.app.router.add_route("*", "/{tail:.*}", echo)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        proxy = start_proxy(port)
        requests.get(
            f"{proxy.url}/view?filename=a.png",
            headers={"Authorization": f"Bearer {TOKEN}", "Origin": proxy.url},
            cookies={"rp_pod_token": TOKEN, "comfy_theme": "dark"},
            timeout=10,
        )
        requests.post(
            f"{proxy.url}/prompt?token={TOKEN}&x=1", json={"a": 1}, timeout=10
        )  # a non-GET keeps its query but not the token
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()

    first, second = seen
    assert "Authorization" not in first
    assert first["Cookie"] == "comfy_theme=dark"
    assert first["Host"] == f"127.0.0.1:{proxy.port}"
    assert first["Origin"] == proxy.url
    assert first["_query"] == "filename=a.png"
    assert second["_query"] == "x=1"
    assert TOKEN not in str(seen)
    assert TOKEN not in proxy.log.read_text()


def test_comfyui_closing_the_socket_closes_it_for_the_client(
    proxy: Proxy, comfyui_standin: ComfyStandin
) -> None:
    ws = websocket.create_connection(
        proxy.url.replace("http", "ws") + "/ws?clientId=dropped",
        header=[f"Authorization: Bearer {TOKEN}"],
        timeout=10,
    )
    try:
        assert '"type": "status"' in ws.recv()
        comfyui_standin.drop_websockets()  # as a restart or a network blip would
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:  # anything still in flight, then the close
                if ws.recv() == "":
                    raise websocket.WebSocketConnectionClosedException("closed")
    finally:
        ws.close()


def test_a_devstack_pod_refuses_strangers_and_serves_its_token(runpod_emulator) -> None:
    """The same checks on a local pod of the RunPod emulator, whose ComfyUI sits behind the
    proxy exactly as on a real pod: the URL RunPod maps for port 8188 is the proxy's."""
    client = RunPodClient(runpod_emulator.api_key, runpod_emulator.base_url, poll_interval_s=0.1)
    spec = PodSpec(
        image="local/comfyui:test",
        gpu_types=["NVIDIA GeForce RTX 4090"],
        env={POD_TOKEN_ENV: TOKEN, "ENABLE_R2_SYNC": "false"},
    )
    pod = client.launch(spec, "proxy-on-a-pod")
    try:
        ready = client.wait_until_ready(pod.id, deadline_s=60)
        for prefix in ("", "/api"):
            assert_strangers_refused(ready.comfyui_url + prefix)
        comfy = ComfyUIClient(ready.comfyui_url, token=TOKEN)
        assert comfy.is_ready()
        assert comfy.queue() == {"queue_running": [], "queue_pending": []}
    finally:
        client.terminate(pod.id)
