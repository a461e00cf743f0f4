"""pytest fixtures for the devstack pieces: usable by this repo's tests and by users' own.

Enable with `pytest_plugins = ["rp_devstack.pytest_plugin"]`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rp_agent.r2 import R2Settings, make_r2_client
from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_devstack.s3 import LocalS3
from rp_devstack.stack import NETWORK_VOLUME_DATACENTER, NETWORK_VOLUME_ID, Devstack


@pytest.fixture(scope="session")
def local_s3() -> Iterator[LocalS3]:
    server = LocalS3().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def r2_settings(local_s3: LocalS3) -> R2Settings:
    """A fresh, empty bucket on the session's S3 server."""
    return local_s3.create_bucket(f"test-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def r2_client(r2_settings: R2Settings):
    return make_r2_client(r2_settings)


@pytest.fixture
def r2_env(r2_settings: R2Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2_settings.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def comfyui_standin(tmp_path: Path) -> Iterator[ComfyStandin]:
    """A running ComfyUI stand-in on a free loopback port with fresh output/input/temp dirs."""
    standin = ComfyStandin(
        tmp_path / "comfyui" / "output",
        input_dir=tmp_path / "comfyui" / "input",
        temp_dir=tmp_path / "comfyui" / "temp",
        step_seconds=0.005,
    )
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()


# ---------------------------------------------------------------- RunPod emulator and devstack


@pytest.fixture(scope="session")
def devstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devstack]:
    """The whole offline stack (S3 + bucket, RunPod emulator with network volume and secrets,
    standalone ComfyUI stand-in); `.env` has the eight connection variables (RunPod, R2,
    ComfyUI), `.emulator` the admin handle. Shared by the session: tests should terminate the
    pods they launch."""
    stack = Devstack(tmp_path_factory.mktemp("devstack"), boot_delay_s=0.5, agent_grace_s=10.0)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def runpod_emulator(tmp_path: Path) -> Iterator[RunPodEmulator]:
    """A fresh emulator for one test (own pods, stock and faults), with the devstack's network
    volume; pods run the ComfyUI stand-in. Stopped (pods killed) after the test."""
    emulator = RunPodEmulator(tmp_path / "runpod", boot_delay_s=0.3, agent_grace_s=10.0)
    emulator.start()
    emulator.add_network_volume(NETWORK_VOLUME_ID, "devstack-volume", NETWORK_VOLUME_DATACENTER)
    try:
        yield emulator
    finally:
        emulator.stop()
