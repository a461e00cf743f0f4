"""`rp-launch doctor` against the emulator and the local S3 server: it passes on a good setup
and names the failing check for a bad key, a volume whose datacenter has no stock, an R2 token
that cannot write, and a missing template. It never creates a pod."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import instance_for_test

from rp_agent.r2 import R2Settings
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.client import DEFAULT_GPU_TYPES, RunPodClient
from rp_pipeline.tools.doctor import Check, Setup, run_checks, verdict

VOLUME = "devstack-volume"


def r2_resource(settings: R2Settings, endpoint: str | None = None) -> R2Resource:
    return R2Resource(
        endpoint=endpoint or settings.endpoint,
        bucket=settings.bucket,
        access_key_id=settings.access_key_id,
        secret_access_key=settings.secret_access_key,
    )


def check(
    emulator: RunPodEmulator,
    r2: R2Resource,
    tmp_path: Path,
    *,
    key: str | None = None,
    **setup: Any,
) -> dict[str, Check]:
    client = RunPodClient(
        key or emulator.api_key, emulator.base_url, retry_backoff_s=0.05, request_timeout_s=5
    )
    options: dict[str, Any] = {
        "gpu_types": list(DEFAULT_GPU_TYPES),
        "cloud_type": "SECURE",
        "network_volume_ids": [VOLUME],
        "image": "ghcr.io/example/runpod-dagster:latest",
    } | setup
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)

    def instance() -> Any:
        return instance_for_test(temp_dir=str(home))

    checks = run_checks(client, Setup(**options), lambda: r2, instance)
    assert emulator.pods() == [], "doctor created a pod"
    return {c.name: c for c in checks}


def test_a_good_setup_passes(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    checks = check(runpod_emulator, r2_resource(r2_settings), tmp_path)
    assert all(c.ok for c in checks.values()), checks
    assert "in datacenter" in checks["network volume"].detail
    assert "$" in checks["gpu stock"].detail
    assert verdict(list(checks.values())).startswith("READY")


def test_a_bad_key_is_named(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    checks = check(runpod_emulator, r2_resource(r2_settings), tmp_path, key="not-the-key")
    assert not checks["runpod key"].ok
    assert "RUNPOD_API_KEY" in checks["runpod key"].detail
    assert verdict(list(checks.values())).startswith("NOT READY")


def test_a_volume_whose_datacenter_has_no_stock_fails_the_stock_check(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    datacenter = volume_datacenter(runpod_emulator, VOLUME)
    for gpu in DEFAULT_GPU_TYPES:
        runpod_emulator.set_stock(gpu, 0, datacenter)
    checks = check(runpod_emulator, r2_resource(r2_settings), tmp_path)
    assert checks["network volume"].ok
    assert not checks["gpu stock"].ok
    assert datacenter in checks["gpu stock"].detail


def test_a_missing_template_is_named(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    checks = check(
        runpod_emulator, r2_resource(r2_settings), tmp_path, template_id="tpl-missing", image=None
    )
    assert not checks["image"].ok
    assert "tpl-missing does not exist" in checks["image"].detail


def test_no_image_and_no_template_is_a_failure(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    checks = check(runpod_emulator, r2_resource(r2_settings), tmp_path, image=None)
    assert not checks["image"].ok
    assert "RP_IMAGE" in checks["image"].detail and "RUNPOD_TEMPLATE_ID" in checks["image"].detail


class ReadOnlyS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint as a read-only R2 token sees it: reads pass through, writes are refused
    with S3's AccessDenied (the local S3 server checks no permissions itself)."""

    upstream = ""

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = urllib.request.Request(
            self.upstream + self.path, data=body or None, method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status, headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as error:
            status, headers, data = error.code, error.headers, error.read()
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in {"transfer-encoding", "connection", "content-length"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = _forward
    do_PUT = do_POST = do_DELETE = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def read_only_endpoint(r2_settings: R2Settings) -> Iterator[str]:
    handler = type("Handler", (ReadOnlyS3,), {"upstream": r2_settings.endpoint.rstrip("/")})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_r2_token_that_cannot_write_is_named(
    runpod_emulator: RunPodEmulator,
    r2_settings: R2Settings,
    read_only_endpoint: str,
    tmp_path: Path,
) -> None:
    checks = check(runpod_emulator, r2_resource(r2_settings, read_only_endpoint), tmp_path)
    assert checks["runpod key"].ok
    assert not checks["r2"].ok
    assert "refused a write (AccessDenied)" in checks["r2"].detail


def volume_datacenter(emulator: RunPodEmulator, volume_id: str) -> str:
    volumes = RunPodClient(emulator.api_key, emulator.base_url).network_volumes()
    [volume] = [v for v in volumes if v["id"] == volume_id]
    return str(volume.get("dataCenterId") or volume.get("dataCenter"))


def test_the_dagster_instance_is_checked(
    runpod_emulator: RunPodEmulator, r2_settings: R2Settings, tmp_path: Path
) -> None:
    checks = check(runpod_emulator, r2_resource(r2_settings), tmp_path)
    assert checks["dagster"].ok and "reachable" in checks["dagster"].detail
