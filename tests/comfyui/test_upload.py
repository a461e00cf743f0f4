"""`POST /upload/image` on the stand-in: the real ComfyUI 0.3.64 exchanges replayed byte for
byte (statuses, bodies, the files left in input/), LoadImage finding what was uploaded, and the
upload passing through the pod's token proxy (rp_agent.proxy) unchanged."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web
from PIL import Image

from rp_agent.proxy import TokenProxy
from rp_devstack.comfyui_standin import ComfyStandin

from .helpers import history_entry
from .test_contract import FIXTURES, fixture

pytestmark = pytest.mark.skipif(
    not (FIXTURES / "INDEX.json").is_file(), reason="recorded ComfyUI transcripts not found"
)

# The order the recording made them in, each on the input/ the one before left behind.
UPLOAD_RECORDINGS = [
    "upload_image_plain",
    "upload_image_same_name_again",
    "upload_image_overwrite_true",
    "upload_image_not_an_image",
    "upload_image_no_image_field",
]
BOUNDARY = "----standinReplayBoundary"


def exchanges(recording: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "exchange" in recording:
        return [("exchange", recording["exchange"])]
    return list(recording["exchanges"].items())


def multipart_body(parts: list[dict[str, Any]]) -> bytes:
    """The recorded parts as sent: each part's own Content-Disposition, type and bytes."""
    out = io.BytesIO()
    for part in parts:
        out.write(
            f"--{BOUNDARY}\r\nContent-Disposition: {part['content_disposition']}\r\n".encode()
        )
        if "content_b64" in part:
            out.write(f"Content-Type: {part['content_type']}\r\n\r\n".encode())
            out.write(base64.b64decode(part["content_b64"]))
        else:
            out.write(b"\r\n" + str(part["value"]).encode())
        out.write(b"\r\n")
    out.write(f"--{BOUNDARY}--\r\n".encode())
    return out.getvalue()


def replay(base_url: str, request: dict[str, Any]) -> requests.Response:
    url = base_url + request["path"]
    if request["method"] == "GET":
        return requests.get(url, params=request.get("query"), timeout=10)
    if "json" in request:
        return requests.post(url, json=request["json"], timeout=10)
    if "multipart" in request:
        return requests.post(
            url,
            data=multipart_body(request["multipart"]),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=10,
        )
    return requests.post(url, timeout=10)


def input_tree(root: Path) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "path": str(p.relative_to(root)),
                "size": p.stat().st_size,
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            }
            for p in root.rglob("*")
            if p.is_file()
        ),
        key=lambda entry: entry["path"],
    )


def png(color: tuple[int, int, int], size: tuple[int, int] = (24, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def test_recorded_uploads_replay(standin: ComfyStandin) -> None:
    for name in UPLOAD_RECORDINGS:
        recording = fixture(name)
        answered: set[str] = set()
        for label, exchange in exchanges(recording):
            want = exchange["response"]
            got = replay(standin.base_url, exchange["request"])
            where = f"{name}/{label}"
            assert got.status_code == want["status"], where
            want_type = want["headers"].get("Content-Type")
            assert got.headers.get("Content-Type") == want_type, where
            if "json" in want:
                assert got.json() == want["json"], where
                answered.add(want["json"]["name"])
            elif "text" in want:
                assert got.text == want["text"], where
            else:
                assert hashlib.sha256(got.content).hexdigest() == want["body_info"]["sha256"], where
            if label == "overwrite_true":
                assert input_tree(standin.input_dir) == recording["input_tree_after_overwrite_true"]
        ours = input_tree(standin.input_dir)
        # The recording also made uploads into subfolders and of other types that it did not
        # keep; everything the kept exchanges made must be there exactly as recorded.
        recorded = recording["input_tree_after"]
        assert all(entry in recorded for entry in ours), name
        assert answered <= {entry["path"] for entry in ours}, name


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"subfolder": "../outside"}, 400),
        ({"subfolder": "/etc"}, 400),
        ({"subfolder": "a/../../outside"}, 400),
        ({"type": "models"}, 500),
        ({"type": ""}, 500),
    ],
)
def test_refused_targets(standin: ComfyStandin, fields: dict[str, str], status: int) -> None:
    response = requests.post(
        standin.base_url + "/upload/image",
        files={"image": ("x.png", png((1, 2, 3)), "image/png")},
        data=fields,
        timeout=10,
    )
    assert response.status_code == status
    assert not any(standin.input_dir.parent.parent.rglob("outside*"))
    assert input_tree(standin.input_dir) == []


def test_filename_leaving_the_folder_is_refused(standin: ComfyStandin) -> None:
    response = requests.post(
        standin.base_url + "/upload/image",
        files={"image": ("../../escaped.png", png((1, 2, 3)), "image/png")},
        timeout=10,
    )
    assert response.status_code == 400
    assert not any(standin.input_dir.parent.rglob("escaped.png"))


def test_subfolder_and_type(standin: ComfyStandin) -> None:
    url = standin.base_url + "/api/upload/image"
    image = png((9, 9, 9))
    answer = requests.post(
        url,
        files={"image": ("s.png", image, "image/png")},
        data={"subfolder": "sub/dir"},
        timeout=10,
    ).json()
    assert answer == {"name": "s.png", "subfolder": "sub/dir", "type": "input"}
    assert (standin.input_dir / "sub/dir/s.png").read_bytes() == image
    answer = requests.post(
        url, files={"image": ("t.png", image, "image/png")}, data={"type": "temp"}, timeout=10
    ).json()
    assert answer == {"name": "t.png", "subfolder": "", "type": "temp"}
    assert (standin.input_dir.parent / "temp" / "t.png").read_bytes() == image


def load_image_graph(image: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3, "sigma": 1.5}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }  # fmt: skip


def test_load_image_lists_and_finds_uploads(standin: ComfyStandin) -> None:
    base = standin.base_url
    for name in ("start.png", "notes.txt", "photo.jpg"):
        requests.post(base + "/upload/image", files={"image": (name, png((5, 6, 7)))}, timeout=10)
    requests.post(
        base + "/upload/image",
        files={"image": ("deep.png", png((5, 6, 7), (40, 30)))},
        data={"subfolder": "nested"},
        timeout=10,
    )
    info = requests.get(base + "/object_info/LoadImage", timeout=10).json()
    # Files directly in input/ whose MIME type is an image; subfolders are not listed.
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["photo.jpg", "start.png"]

    # ...but a subfolder path validates (LoadImage checks only that the file exists) and runs.
    for image, prefix, size in (
        ("start.png", "flat", (24, 16)),
        ("nested/deep.png", "deep", (40, 30)),
    ):
        answer = requests.post(
            base + "/prompt", json={"prompt": load_image_graph(image, prefix)}, timeout=10
        )
        assert answer.status_code == 200, answer.text
        entry = history_entry(base, answer.json()["prompt_id"])
        assert entry["status"]["status_str"] == "success", entry["status"]
        with Image.open(standin.output_dir / f"{prefix}_00001_.png") as img:
            assert img.size == size


def test_load_image_of_a_missing_file_matches_the_recording(standin: ComfyStandin) -> None:
    recorded = fixture("invalid_loadimage_missing_file")["post_prompt"]
    got = requests.post(standin.base_url + "/prompt", json=recorded["request"]["json"], timeout=10)
    assert got.status_code == recorded["response"]["status"] == 400
    assert got.json() == recorded["response"]["json"]


# ---------------------------------------------------------------- through the pod's token proxy


class InProcessProxy:
    """rp_agent.proxy's TokenProxy on a loopback port, in a thread of this process."""

    def __init__(self, upstream_port: int, token: str) -> None:
        self.proxy = TokenProxy(f"127.0.0.1:{upstream_port}", token)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.proxy.app())
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = ""

    def start(self) -> None:
        self.thread.start()

        async def serve() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

        port = asyncio.run_coroutine_threadsafe(serve(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def proxy(standin: ComfyStandin) -> Iterator[InProcessProxy]:
    server = InProcessProxy(standin.port, TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_upload_through_the_token_proxy(standin: ComfyStandin, proxy: InProcessProxy) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    image = png((200, 10, 10), (64, 48))
    refused = requests.post(
        proxy.url + "/upload/image", files={"image": ("a.png", image)}, timeout=10
    )
    assert (refused.status_code, refused.content) == (401, b"")
    assert input_tree(standin.input_dir) == []

    answer = requests.post(
        proxy.url + "/upload/image",
        files={"image": ("a.png", image, "image/png")},
        data={"overwrite": "true", "subfolder": "starts"},
        headers=auth,
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json() == {"name": "a.png", "subfolder": "starts", "type": "input"}
    assert (standin.input_dir / "starts" / "a.png").read_bytes() == image

    # A body with no Content-Length (chunked), as a streaming client sends a large file.
    big = secrets.token_bytes(3 * 1024 * 1024)
    body = multipart_body(
        [{"content_disposition": 'form-data; name="image"; filename="big.png"',
          "content_type": "image/png", "content_b64": base64.b64encode(big).decode()}]
    )  # fmt: skip
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    answer = requests.post(
        proxy.url + "/api/upload/image",
        data=chunks,
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )
    assert answer.json() == {"name": "big.png", "subfolder": "", "type": "input"}
    assert (standin.input_dir / "big.png").read_bytes() == big

    # What the proxy passed on is usable at once: LoadImage validates and runs on it.
    graph = load_image_graph("starts/a.png", "proxied")
    queued = requests.post(proxy.url + "/prompt", json={"prompt": graph}, headers=auth, timeout=10)
    assert queued.status_code == 200, queued.text


def test_load_image_mask_lists_and_checks_uploads_too(standin: ComfyStandin) -> None:
    base = standin.base_url
    requests.post(base + "/upload/image", files={"image": ("mask.png", png((0, 0, 0)))}, timeout=10)
    info = requests.get(base + "/object_info/LoadImageMask", timeout=10).json()
    assert info["LoadImageMask"]["input"]["required"]["image"][0] == ["mask.png"]

    def graph(image: str) -> dict[str, Any]:
        return {
            "1": {"class_type": "LoadImageMask", "inputs": {"image": image, "channel": "red"}},
            "2": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 0]}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
        }

    ok = requests.post(base + "/prompt", json={"prompt": graph("mask.png")}, timeout=10)
    assert ok.status_code == 200, ok.text
    missing = requests.post(base + "/prompt", json={"prompt": graph("nope.png")}, timeout=10)
    assert missing.status_code == 400
    (error,) = missing.json()["node_errors"]["1"]["errors"]
    assert error["details"] == "image - Invalid image file: nope.png"
