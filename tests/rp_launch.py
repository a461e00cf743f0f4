"""`rp-launch` as the tests run it: a subprocess of this venv's entry point against an emulator,
and the one-line error it must give on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rp_devstack.runpod_emulator import RunPodEmulator

RP_LAUNCH = str(Path(sys.executable).with_name("rp-launch"))


def only_base_url_and_key(
    emulator: RunPodEmulator, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """rp-launch with nothing of the host's env but PATH, HOME, the API key and base URL."""
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "RUNPOD_API_KEY": emulator.api_key,
        "RUNPOD_API_BASE_URL": emulator.base_url,
        # A configured user's image (the pod image their CI publishes); there is no default.
        "RP_IMAGE": "local/comfyui:test",
        **env,
    }
    return subprocess.run(
        [RP_LAUNCH, *args], env=environ, capture_output=True, text=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The failure's only stderr line, after checking the exit code, the prefix and that no
    traceback was printed."""
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rp-launch: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]
