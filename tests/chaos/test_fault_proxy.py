"""The R2 fault proxy: passes bytes through, refuses for a window, freezes for a window."""

from __future__ import annotations

import socket
import time

import pytest
from botocore.exceptions import EndpointConnectionError

from rp_agent.r2 import R2Settings, make_r2_client
from rp_devstack.fault_proxy import FaultProxy
from rp_devstack.s3 import LocalS3


@pytest.fixture
def proxy(local_s3: LocalS3):
    proxy = FaultProxy("127.0.0.1", local_s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def through(proxy: FaultProxy, settings: R2Settings):
    return make_r2_client(
        R2Settings(proxy.url, settings.bucket, settings.access_key_id, settings.secret_access_key)
    )


def test_bytes_pass_through_untouched(proxy: FaultProxy, r2_settings: R2Settings) -> None:
    client = through(proxy, r2_settings)
    client.put_object(Bucket=r2_settings.bucket, Key="a/b.bin", Body=bytes(range(256)) * 4096)
    body = client.get_object(Bucket=r2_settings.bucket, Key="a/b.bin")["Body"].read()
    assert body == bytes(range(256)) * 4096


def test_refuse_window_refuses_then_heals(proxy: FaultProxy) -> None:
    proxy.refuse(30.0)
    deadline = time.monotonic() + 10
    while proxy._listener is not None and time.monotonic() < deadline:  # the loop closes it
        time.sleep(0.05)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=2).close()
    proxy.heal()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=2).close()
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        pytest.fail("the proxy did not listen again after heal()")


def test_refused_s3_call_fails_with_a_connection_error(
    proxy: FaultProxy, r2_settings: R2Settings
) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id=r2_settings.access_key_id,
        aws_secret_access_key=r2_settings.secret_access_key,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    proxy.refuse(30.0)
    with pytest.raises(EndpointConnectionError):
        client.head_bucket(Bucket=r2_settings.bucket)


def test_freeze_holds_bytes_until_the_window_ends(
    proxy: FaultProxy, r2_settings: R2Settings
) -> None:
    sock = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5)
    proxy.freeze(60.0)
    sock.sendall(f"HEAD /{r2_settings.bucket} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        sock.recv(1)  # nothing moves while frozen
    proxy.heal()
    sock.settimeout(10)
    assert sock.recv(12).startswith(b"HTTP/1.1")
    sock.close()
