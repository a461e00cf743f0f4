"""A real S3 server process (moto server, with R2's atomic conditional writes) for Cloudflare R2."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field

import boto3

from rp_agent.r2 import R2Settings
from rp_devstack.local_pods import end_process_group, guarded
from rp_devstack.ports import free_port, wait_for_port

# moto accepts any credentials; these are fixed so the env file is stable and obviously fake.
LOCAL_ACCESS_KEY_ID = "devstack-access-key"
LOCAL_SECRET_ACCESS_KEY = "devstack-secret-key"


@dataclass
class LocalS3:
    """moto_server on a free loopback port; `start()` then `create_bucket()`; `stop()` ends it."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_path: str | None = None) -> LocalS3:
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        # Under the local pods' orphan guard, so a SIGKILLed parent never leaves moto running.
        self.process = subprocess.Popen(
            guarded(
                [
                    sys.executable,
                    "-m",
                    "rp_devstack.s3_server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60)
        return self

    def settings(self, bucket: str) -> R2Settings:
        return R2Settings(
            endpoint=self.endpoint,
            bucket=bucket,
            access_key_id=LOCAL_ACCESS_KEY_ID,
            secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        )

    def create_bucket(self, bucket: str) -> R2Settings:
        settings = self.settings(bucket)
        # Bucket creation is setup, not product code: moto wants a LocationConstraint for any
        # region but us-east-1, and R2 buckets are created in the dashboard anyway.
        boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=LOCAL_SECRET_ACCESS_KEY,
        ).create_bucket(Bucket=bucket)
        return settings

    def reset(self) -> None:
        """Forget every bucket and object (moto's own reset endpoint)."""
        urllib.request.urlopen(
            urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST"), timeout=10
        ).read()

    def stop(self) -> None:
        if self.process:
            end_process_group(self.process, grace_s=10)
