"""`ComfyUIClient.upload_image` against the stand-in behind the pod's token proxy, as the
pipeline reaches a pod: content-hash names, nothing rewritten on a re-upload, the size limit
checked before sending, 4xx final and 5xx / connection errors retried."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rp_devstack.comfyui_standin import ComfyStandin
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.errors import ComfyUIError, ComfyUIUnavailable

from .test_upload import TOKEN, InProcessProxy, input_tree, load_image_graph, png, proxy

__all__ = ["proxy"]  # the fixture, imported for its name


def counting_session() -> tuple[requests.Session, list[int]]:
    """A session that notes the status of every response it receives."""
    session = requests.Session()
    seen: list[int] = []
    session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    return session, seen


def proxied_client(proxy: InProcessProxy, **kwargs: object) -> ComfyUIClient:
    return ComfyUIClient(proxy.url, token=TOKEN, upload_retry_pause_s=0.01, **kwargs)  # type: ignore[arg-type]


def test_upload_is_named_by_content_and_loadimage_finds_it(
    standin: ComfyStandin, proxy: InProcessProxy, tmp_path: Path
) -> None:
    image = png((200, 10, 10), (64, 48))
    source = tmp_path / "Start Frame.PNG"
    source.write_bytes(image)
    client = proxied_client(proxy)
    name = client.upload_image(source)
    assert name == f"rp_inputs/{hashlib.sha256(image).hexdigest()[:16]}.png"
    assert (standin.input_dir / name).read_bytes() == image
    # What the upload answered is what LoadImage takes.
    queued = client.submit(load_image_graph(name, "from_upload"))
    assert client.wait(queued.prompt_id, 30).status == "success"


def test_reupload_writes_nothing_and_images_never_replace_each_other(
    standin: ComfyStandin, proxy: InProcessProxy
) -> None:
    client = proxied_client(proxy)
    red, blue = png((255, 0, 0)), png((0, 0, 255))
    first = client.upload_image(red, ".png")
    stored = standin.input_dir / first
    os.utime(stored, ns=(1_000_000_000, 1_000_000_000))  # a write would move this
    again = ComfyUIClient(proxy.url, token=TOKEN).upload_image(red, ".png")
    assert again == first
    assert stored.stat().st_mtime_ns == 1_000_000_000
    other = client.upload_image(blue, ".png")
    assert other != first
    assert (standin.input_dir / first).read_bytes() == red
    assert (standin.input_dir / other).read_bytes() == blue
    assert len(input_tree(standin.input_dir)) == 2


def test_over_the_upload_limit_is_refused_before_sending(
    standin: ComfyStandin, proxy: InProcessProxy
) -> None:
    session, seen = counting_session()
    client = ComfyUIClient(proxy.url, token=TOKEN, session=session, max_upload_bytes=64 * 1024)
    with pytest.raises(ComfyUIError, match=r"over ComfyUI's upload limit of 65536 bytes") as info:
        client.upload_image(b"x" * (64 * 1024), ".png")
    assert "\n" not in str(info.value)
    assert seen == []
    assert input_tree(standin.input_dir) == []


def test_a_refusal_is_final(standin: ComfyStandin, proxy: InProcessProxy) -> None:
    session, seen = counting_session()
    client = ComfyUIClient(proxy.url, token="not-the-pod-token-at-all", session=session)
    with pytest.raises(ComfyUIError, match="HTTP 401") as info:
        client.upload_image(png((1, 2, 3)), ".png")
    assert not isinstance(info.value, ComfyUIUnavailable)
    assert seen == [401]  # not tried again


@pytest.fixture
def proxy_to_nothing() -> Iterator[InProcessProxy]:
    """The token proxy with no ComfyUI behind it (ComfyUI not up yet): it answers 502."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    server = InProcessProxy(free_port, TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_5xx_is_retried_then_reported(proxy_to_nothing: InProcessProxy) -> None:
    session, seen = counting_session()
    client = proxied_client(proxy_to_nothing, session=session, upload_attempts=3)
    with pytest.raises(ComfyUIUnavailable, match="HTTP 502"):
        client.upload_image(png((9, 9, 9)), ".png")
    assert seen == [502, 502, 502]


def test_connection_errors_are_retried_then_reported() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    client = ComfyUIClient(url, upload_attempts=2, upload_retry_pause_s=0.01)
    with pytest.raises(ComfyUIUnavailable, match="cannot reach ComfyUI"):
        client.upload_image(png((9, 9, 9)), ".png")
