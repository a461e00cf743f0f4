"""Start images of requests: read from the prompts folder, R2 or https, checked before any pod,
stored in R2 by content, part of the request's key, uploaded to a pod's ComfyUI before queuing.

URLs: the https-only rule is tested on the reader (http:// is refused before any connection);
the size cap, the total timeout and redirects are tested on `fetch_capped` against a loopback
http server (a TLS server on loopback would test the same code with a certificate around it).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from PIL import Image

from rp_devstack.comfyui_standin import ComfyStandin
from rp_pipeline.fleet.start_images import ensure_start_image
from rp_pipeline.fleet.state import plan_videos
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.model import RequestError, parse_request, scan_requests
from rp_pipeline.video_requests.start_image import (
    MAX_START_IMAGE_PIXELS,
    StartImageError,
    StartImageReader,
    fetch_capped,
)
from rp_pipeline.video_requests.store import load_request, resolve_requests

I2V = "wan22_i2v_14b_lightx2v"
TINY = {"width": 160, "height": 96, "frames": 9, "fps": 8}


def png(color: tuple[int, int, int], size: tuple[int, int] = (32, 24), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def i2v_entry(image: str, **extra: Any) -> dict[str, Any]:
    return {"prompt": "the fox turns", "workflow": I2V, "seed": 1, "params": {**TINY, "input_image": image}, **extra}  # fmt: skip


@pytest.fixture
def r2(r2_settings: Any) -> R2Resource:
    return R2Resource(
        endpoint=r2_settings.endpoint,
        bucket=r2_settings.bucket,
        access_key_id=r2_settings.access_key_id,
        secret_access_key=r2_settings.secret_access_key,
    )


# ------------------------------------------------------------------ the request and its key


def test_a_local_start_image_is_read_checked_and_keyed_by_content(tmp_path: Path) -> None:
    (tmp_path / "starts").mkdir()
    red = png((255, 0, 0))
    (tmp_path / "starts" / "fox.png").write_bytes(red)
    reader = StartImageReader(tmp_path)
    request = parse_request(i2v_entry("starts/fox.png"), reader)
    sha = hashlib.sha256(red).hexdigest()
    assert request.start_image == {
        "source": "starts/fox.png", "sha256": sha, "size_bytes": len(red), "width": 32,
        "height": 24, "format": "PNG", "r2_key": f"inputs/{sha}.png",
    }  # fmt: skip
    # The LoadImage node gets the name the pod's upload will answer.
    assert request.workflow_params()["input_image"] == f"rp_inputs/{sha[:16]}.png"
    # Same bytes elsewhere: the same video, the same partition. Other bytes: a new one.
    (tmp_path / "copy.png").write_bytes(red)
    assert parse_request(i2v_entry("copy.png"), StartImageReader(tmp_path)).key == request.key
    (tmp_path / "starts" / "fox.png").write_bytes(png((0, 255, 0)))
    assert parse_request(i2v_entry("starts/fox.png"), StartImageReader(tmp_path)).key != request.key


def test_requests_without_a_start_image_keep_their_keys(tmp_path: Path) -> None:
    request = parse_request({"prompt": "hills", "seed": 3})
    assert request.start_image is None and "start_image" not in request.to_dict()
    assert (
        request.key
        == "hills-"
        + hashlib.sha256(
            b'{"negative_prompt":"","params":{},"prompt":"hills","seed":3,"workflow":"wan22_ti2v_5b"}'
        ).hexdigest()[:10]
    )


@pytest.mark.parametrize(
    ("setup", "source", "message"),
    [
        (None, "missing.png", r"start image missing\.png not found in the prompts folder"),
        (None, "../outside.png", r"is outside the prompts folder .*: put it there"),
        ("text", "notes.png", r"start image notes\.png is not a readable image"),
        ("truncated", "cut.png", r"start image cut\.png is not a readable image"),
        ("gif", "anim.gif", r"start image anim\.gif is GIF; use PNG, JPEG or WebP"),
        ("huge", "huge.png", rf"over the limit of {MAX_START_IMAGE_PIXELS} pixels"),
        ("big", "big.png", r"bytes, over the limit of 20971520: use a smaller image"),
        (None, "http://example.com/a.png", r"only https:// URLs, r2://<key> and files"),
        (None, "ftp://example.com/a.png", r"only https:// URLs, r2://<key> and files"),
        (None, "r2://inputs/a.png", r"no R2 access here to read it"),
    ],
)
def test_unusable_start_images_are_refused_in_one_line(
    tmp_path: Path, setup: str | None, source: str, message: str
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (tmp_path / "outside.png").write_bytes(png((1, 1, 1)))
    target = prompts / source
    if setup == "text":
        target.write_text("not an image")
    elif setup == "truncated":
        target.write_bytes(png((5, 5, 5), (64, 64))[:-40])
    elif setup == "gif":
        target.write_bytes(png((5, 5, 5), fmt="GIF"))
    elif setup == "huge":
        target.write_bytes(png((0, 0, 0), (4100, 4100)))
    elif setup == "big":
        with target.open("wb") as fh:
            fh.truncate(21 * 1024 * 1024)
    with pytest.raises(RequestError, match=message) as info:
        parse_request(i2v_entry(source), StartImageReader(prompts))
    assert "\n" not in str(info.value)


def test_a_bad_start_image_is_one_problem_line_in_a_scan(tmp_path: Path) -> None:
    (tmp_path / "good.png").write_bytes(png((9, 9, 9)))
    entries = [i2v_entry("good.png"), i2v_entry("nope.png")]
    (tmp_path / "i2v.yaml").write_text(yaml.safe_dump({"requests": entries}))
    scan = scan_requests(tmp_path)
    assert len(scan.requests) == 1
    [problem] = scan.problems
    assert problem.endswith(
        "i2v.yaml: entry 1: start image nope.png not found in the prompts folder "
        + str(tmp_path.resolve())
    )


# ------------------------------------------------------------------ R2: stored and read


def test_registration_stores_the_image_by_content_and_runs_find_it(
    r2: R2Resource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_PROMPTS_DIR", str(tmp_path))
    image = png((10, 200, 30), fmt="JPEG")
    (tmp_path / "start.jpg").write_bytes(image)
    request = parse_request(i2v_entry("start.jpg"), StartImageReader(tmp_path))
    found = resolve_requests(r2, [request.key], {request.key: i2v_entry("start.jpg")})
    assert found[request.key] == request
    sha = hashlib.sha256(image).hexdigest()
    assert r2.get_bytes(f"inputs/{sha}.jpg") == image
    head = r2.head(f"inputs/{sha}.jpg")
    assert head is not None and head.metadata["sha256"] == sha
    # The stored spec carries the facts: a later run needs neither the file nor a re-read.
    (tmp_path / "start.jpg").unlink()
    assert load_request(r2, request.key) == request
    assert resolve_requests(r2, [request.key], {})[request.key] == request


def test_an_r2_start_image_is_read_from_the_bucket(r2: R2Resource, tmp_path: Path) -> None:
    image = png((0, 0, 200))
    r2.put_bytes("my/starts/blue.png", image, "image/png")
    request = parse_request(i2v_entry("r2://my/starts/blue.png"), StartImageReader(tmp_path, r2=r2))
    assert request.start_image is not None
    assert request.start_image["sha256"] == hashlib.sha256(image).hexdigest()
    with pytest.raises(RequestError, match=r"r2://my/none\.png: no such object in test-"):
        parse_request(i2v_entry("r2://my/none.png"), StartImageReader(tmp_path, r2=r2))


# ------------------------------------------------------------------ URLs


class Images(http.server.BaseHTTPRequestHandler):
    """/ok.png: an image; /big: 2 MB with a Content-Length; /chunked: 2 MB without one;
    /slow: an image trickled over ~3 s; /moved: a redirect to `plain` (an http:// URL);
    /hop: a redirect to /ok.png on the same server."""

    image = png((7, 7, 7))
    plain = ""

    def do_GET(self) -> None:
        if self.path == "/ok.png":
            self._send(self.image)
        elif self.path == "/big":
            self._send(b"\0" * 2_000_000)
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"%x\r\n%s\r\n" % (50_000, b"\0" * 50_000))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.image)))
            self.end_headers()
            for byte in self.image[:30]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(self.image[30:])
        elif self.path in ("/moved", "/hop"):
            self.send_response(302)
            self.send_header("Location", self.plain if self.path == "/moved" else "/ok.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def serve(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def https_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, requests.Session]]:
    """A loopback https server with a self-signed certificate, and a session trusting it."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # they would override session.verify
        monkeypatch.delenv(name, raising=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    secure = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    secure.socket = context.wrap_socket(secure.socket, server_side=True)
    Images.plain = f"http://127.0.0.1:{plain.server_address[1]}/ok.png"
    threads = [serve(plain), serve(secure)]
    session = requests.Session()
    session.verify = str(cert)
    try:
        yield f"https://127.0.0.1:{secure.server_address[1]}", session
    finally:
        session.close()
        for server, thread in zip((plain, secure), threads, strict=True):
            server.shutdown()
            server.server_close()
            thread.join(5)


def test_fetch_capped_limits(https_images: tuple[str, requests.Session]) -> None:
    base, session = https_images
    assert fetch_capped(base + "/ok.png", session) == Images.image
    assert fetch_capped(base + "/hop", session) == Images.image
    with pytest.raises(StartImageError, match=r"is 2000000 bytes, over the limit of 1000000"):
        fetch_capped(base + "/big", session, max_bytes=1_000_000)
    with pytest.raises(StartImageError, match=r"over the limit of 1000000 bytes"):
        fetch_capped(base + "/chunked", session, max_bytes=1_000_000)
    started = time.monotonic()
    with pytest.raises(StartImageError, match=r"took over 1 s to download"):
        fetch_capped(base + "/slow", session, timeout_s=1.0)
    assert time.monotonic() - started < 2.5
    with pytest.raises(StartImageError, match=r"answered HTTP 404"):
        fetch_capped(base + "/none", session)
    # Plain http is never requested, not even as a redirect's target.
    with pytest.raises(StartImageError, match=r"\(redirected to http://.*only https:// URLs"):
        fetch_capped(base + "/moved", session)
    with pytest.raises(StartImageError, match=r"only https:// URLs are read"):
        fetch_capped(Images.plain, session)
    # A certificate nobody vouches for is refused.
    with pytest.raises(StartImageError, match=r"could not be downloaded: .*CERTIFICATE_VERIFY"):
        fetch_capped(base + "/ok.png", requests.Session())


def test_a_url_start_image_counts_by_its_bytes(
    https_images: tuple[str, requests.Session], tmp_path: Path
) -> None:
    base, session = https_images
    from_url = parse_request(
        i2v_entry(base + "/ok.png"), StartImageReader(tmp_path, session=session)
    )
    (tmp_path / "same.png").write_bytes(Images.image)
    local = parse_request(i2v_entry("same.png"), StartImageReader(tmp_path))
    assert from_url.start_image is not None and local.start_image is not None
    assert from_url.start_image["sha256"] == local.start_image["sha256"]
    assert from_url.key == local.key


# ------------------------------------------------------------------ onto the pod


def test_ensure_start_image_uploads_once_per_pod_client_and_loadimage_runs(
    r2: R2Resource, comfyui_standin: ComfyStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_PROMPTS_DIR", str(tmp_path))
    image = png((120, 30, 200), (160, 96))
    (tmp_path / "s.png").write_bytes(image)
    request = parse_request(i2v_entry("s.png"), StartImageReader(tmp_path))
    specs = resolve_requests(r2, [request.key], {request.key: i2v_entry("s.png")})
    [video], problems = plan_videos(specs, [request.key], "run1")
    assert problems == {}
    session = requests.Session()
    uploads: list[str] = []
    session.hooks["response"].append(
        lambda r, *a, **k: uploads.append(r.url) if r.url.endswith("/upload/image") else None
    )
    client = ComfyUIClient(comfyui_standin.base_url, session=session, poll_interval_s=0.2)
    api = ensure_start_image(client, r2, video)
    assert ensure_start_image(client, r2, video) == api
    assert len(uploads) == 1
    name = f"rp_inputs/{hashlib.sha256(image).hexdigest()[:16]}.png"
    assert (comfyui_standin.input_dir / name).read_bytes() == image
    assert [n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage"] == [name]
    result = client.wait(client.submit(api).prompt_id, 60)
    assert result.status == "success"


def test_a_name_taken_by_other_bytes_gets_the_name_comfyui_answers(
    r2: R2Resource, comfyui_standin: ComfyStandin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_PROMPTS_DIR", str(tmp_path))
    image = png((3, 140, 60), (160, 96))
    (tmp_path / "t.png").write_bytes(image)
    request = parse_request(i2v_entry("t.png"), StartImageReader(tmp_path))
    specs = resolve_requests(r2, [request.key], {request.key: i2v_entry("t.png")})
    [video], _ = plan_videos(specs, [request.key], "run2")
    planned = f"rp_inputs/{hashlib.sha256(image).hexdigest()[:16]}"
    squatter = comfyui_standin.input_dir / f"{planned}.png"
    squatter.parent.mkdir(parents=True, exist_ok=True)
    squatter.write_bytes(png((0, 0, 0)))  # someone else's file under our planned name
    client = ComfyUIClient(comfyui_standin.base_url, poll_interval_s=0.2)
    api = ensure_start_image(client, r2, video)
    [name] = [n["inputs"]["image"] for n in api.values() if n["class_type"] == "LoadImage"]
    assert name == f"{planned} (1).png"
    assert (comfyui_standin.input_dir / name).read_bytes() == image
    assert video.api_json != api  # the planned JSON is left as it was
    assert client.wait(client.submit(api).prompt_id, 60).status == "success"
