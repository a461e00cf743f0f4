"""What a stranger can hold on the pod's public port: `rp-agent proxy` as a real process, real
sockets on loopback. Connections that send their headers slowly, or nothing, are closed after
the header time limit; beyond the cap of connections without a token the oldest is closed; the
pod's token still gets through at once while strangers hold the port.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from rp_agent.conn_guard import HEADER_TIMEOUT_ENV, MAX_UNAUTHENTICATED_ENV
from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.ports import free_port

TOKEN = secrets.token_urlsafe(32)


@pytest.fixture
def start_proxy(
    tmp_path: Path, comfyui_standin: ComfyStandin
) -> Iterator[Callable[..., tuple[int, subprocess.Popen[bytes]]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**env_extra: str) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        env = {**os.environ, "RP_POD_TOKEN": TOKEN, **env_extra}
        log = tmp_path / f"proxy-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "rp_agent.cli", "proxy", "--listen", f"127.0.0.1:{port}",
                 "--upstream", f"127.0.0.1:{comfyui_standin.port}"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        started.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return port, process
            except OSError:
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


def is_closed(sock: socket.socket) -> bool:
    """The proxy closed (or reset) this connection: a read returns EOF or fails at once."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False  # open, nothing to read
    except OSError:
        return True


def open_connections(port: int, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(count)]


def authorized_get(port: int) -> requests.Response:
    return requests.get(
        f"http://127.0.0.1:{port}/system_stats",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    )


def test_silent_and_slow_header_connections_are_closed_after_the_limit(start_proxy) -> None:
    port, _ = start_proxy(**{HEADER_TIMEOUT_ENV: "2", MAX_UNAUTHENTICATED_ENV: "200"})
    silent = open_connections(port, 25)
    slow = open_connections(port, 25)
    for sock in slow:
        sock.sendall(b"GET /system_stats HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        deadline = time.monotonic() + 6  # the limit is 2 s; without it all 50 stay open
        dripping = list(slow)
        while time.monotonic() < deadline:
            for sock in list(dripping):
                try:
                    sock.sendall(b"X")  # one header byte at a time, never the blank line
                except OSError:
                    dripping.remove(sock)
            time.sleep(0.25)
            if all(is_closed(s) for s in silent) and not dripping:
                break
        still_open = [s for s in silent if not is_closed(s)] + [
            s for s in dripping if not is_closed(s)
        ]
        assert still_open == [], f"{len(still_open)} of 50 stranger connections still open"
        assert authorized_get(port).status_code == 200
    finally:
        for sock in silent + slow:
            sock.close()


def test_beyond_the_cap_the_oldest_stranger_goes_and_the_token_passes_fast(start_proxy) -> None:
    cap = 10
    port, _ = start_proxy(**{HEADER_TIMEOUT_ENV: "60", MAX_UNAUTHENTICATED_ENV: str(cap)})
    strangers = open_connections(port, 40)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            open_now = [s for s in strangers if not is_closed(s)]
            if len(open_now) <= cap:
                break
            time.sleep(0.1)
        assert len(open_now) <= cap, f"{len(open_now)} connections without a token held"
        assert open_now == strangers[-len(open_now) :], "the newest should be the ones kept"
        # The port is full of strangers; the pipeline's request still goes through at once.
        for _ in range(5):
            started = time.monotonic()
            assert authorized_get(port).status_code == 200
            assert time.monotonic() - started < 1.0
    finally:
        for sock in strangers:
            sock.close()


def test_a_refused_request_gets_no_keep_alive_connection(start_proxy) -> None:
    port, _ = start_proxy()
    response = requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=5)
    assert response.status_code == 401
    assert response.headers.get("Connection", "").lower() == "close"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(4096):  # ends when the proxy closes
            received += chunk
        assert received.startswith(b"HTTP/1.1 401")
