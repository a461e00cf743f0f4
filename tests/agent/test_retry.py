"""Transient failures: uploads retry with backoff through a real TCP proxy that drops connections."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from rp_agent.r2 import R2Settings
from rp_devstack.ports import free_port

from .helpers import AgentRun, agent_env, prefix_of, wait_for


class FlakyProxy:
    """Forwards TCP to the S3 server while `up` is set; otherwise accepts and hangs up at once."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.up = threading.Event()
        self.up.set()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        self._active: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._active += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        """Refuse new connections and cut the open ones (pooled keep-alive connections too)."""
        self.up.clear()
        for sock in self._active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._active.clear()

    def close(self) -> None:
        self._closed = True
        self._server.close()


@pytest.fixture
def flaky_proxy(r2_settings: R2Settings) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(urlparse(r2_settings.endpoint).port or 80)
    try:
        yield proxy
    finally:
        proxy.close()


def test_upload_retries_with_backoff_until_the_endpoint_is_back(
    flaky_proxy: FlakyProxy, r2_settings: R2Settings, r2_client, tmp_path: Path, watch_dir: Path
) -> None:
    settings = R2Settings(
        f"http://127.0.0.1:{flaky_proxy.port}",
        r2_settings.bucket,
        r2_settings.access_key_id,
        r2_settings.secret_access_key,
    )
    run = AgentRun(watch_dir, tmp_path / "state", agent_env(settings), tmp_path / "agent.log")
    try:
        run.start()  # HeadBucket goes through the proxy while it is up
        flaky_proxy.down()
        (watch_dir / "late.png").write_bytes(b"arrives after an outage")
        wait_for(lambda: "retry in" in run.log(), 60)
        flaky_proxy.up.set()
        key = prefix_of("late.png")
        body = wait_for(
            lambda: (
                r2_client.get_object(Bucket=r2_settings.bucket, Key=key)["Body"].read()
                if key
                in {
                    o["Key"]
                    for o in r2_client.list_objects_v2(Bucket=r2_settings.bucket).get(
                        "Contents", []
                    )
                }
                else None
            ),
            60,
        )
        assert body == b"arrives after an outage"
        assert "marked failed" not in run.log()
    finally:
        run.stop()
