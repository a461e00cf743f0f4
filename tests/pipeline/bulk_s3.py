"""A moto S3 server on a thread of this process, so a test can fill a bucket with tens of
thousands of objects through moto's backend in seconds (an HTTP PUT each takes minutes), while
the code under test still talks real S3 HTTP to it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

from rp_pipeline.integrations.r2.resource import R2Resource


@contextmanager
def threaded_s3(bucket: str = "bulk-outputs") -> Iterator[R2Resource]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bulk",
            aws_secret_access_key="bulk",
        ).create_bucket(Bucket=bucket)
        yield R2Resource(
            endpoint=endpoint, bucket=bucket, access_key_id="bulk", secret_access_key="bulk"
        )
    finally:
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].reset()
        server.stop()


def bulk_put(bucket: str, keys: Iterable[str]) -> None:
    """Empty objects straight into moto's backend (no HTTP): ~10k keys per second."""
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for key in keys:
        backend.put_object(bucket, key, b"")
