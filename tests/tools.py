"""The external tools the tests run, resolved the way the project itself resolves them, so the
suite does not depend on which copy happens to come first on PATH."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def uv_command() -> list[str]:
    """The uv that runs this suite (`uv run` exports its own path as $UV); else the Makefile's
    choice: `uv` on PATH, else `python3 -m uv` (a pip install that put no `uv` on PATH)."""
    own = os.environ.get("UV")
    if own and Path(own).is_file():
        return [own]
    found = shutil.which("uv")
    if found:
        return [found]
    return [shutil.which("python3") or sys.executable, "-m", "uv"]
