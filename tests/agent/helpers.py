"""Helpers for agent tests: the real `rp-agent` as a subprocess, polling, bucket listings."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rp_agent.keys import control_prefix, logs_prefix, object_key, receipts_prefix, seq_of
from rp_agent.r2 import R2Settings
from rp_agent.receipts import Receipt, decode


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; fail with the timeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def list_objects(client: Any, bucket: str) -> dict[str, dict[str, Any]]:
    """The synced outputs (the agent's receipts and log objects under `_rp/` left out)."""
    objects: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            if not obj["Key"].startswith(control_prefix()):
                objects[obj["Key"]] = obj
    return objects


def read_receipts(
    client: Any, bucket: str, pod_id: str = "pod-test"
) -> list[tuple[str, list[Receipt]]]:
    """Every receipt object of `pod_id` in key order: (key, its receipts)."""
    found = []
    prefix = receipts_prefix(pod_id)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            found.append((obj["Key"], decode(body, seq_of(obj["Key"]) or 0)))
    return found


def read_pod_logs(client: Any, bucket: str, pod_id: str = "pod-test") -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    prefix = logs_prefix(pod_id)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            lines += [json.loads(line) for line in body.splitlines()]
    return lines


@dataclass
class AgentRun:
    """One `rp-agent sync` process; its stderr goes to a log file the test can read."""

    watch_dir: Path
    state_dir: Path
    env: dict[str, str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, once: bool = False) -> AgentRun:
        args = [
            sys.executable,
            "-m",
            "rp_agent.cli",
            "sync",
            "--watch-dir",
            str(self.watch_dir),
            "--state-dir",
            str(self.state_dir),
            *self.extra_args,
        ]
        if once:
            args.append("--once")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        log.close()
        if not once:
            wait_for(lambda: "watching" in self.log() or self.process.poll() is not None, 60)
            assert self.process.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, timeout: float = 120) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def agent_env(settings: R2Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R2_", "RP_AGENT_"))}
    env.update(
        R2_ENDPOINT=settings.endpoint,
        R2_BUCKET=settings.bucket,
        R2_ACCESS_KEY_ID=settings.access_key_id,
        R2_SECRET_ACCESS_KEY=settings.secret_access_key,
        RUNPOD_POD_ID="pod-test",
        **extra,
    )
    return env


def prefix_of(relpath: str, mtime: float | None = None) -> str:
    return object_key(relpath, time.time() if mtime is None else mtime, "pod-test")
