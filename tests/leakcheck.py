"""pytest plugin: the session fails if its tests left temp files or processes behind.

At configure time the session gets a temp dir of its own and makes it the temp dir of
everything it runs (`TMPDIR`, inherited by every subprocess, and `tempfile.tempdir`). At the
end that dir must be empty, and no process may still carry that `TMPDIR` in its environment:
such a process was started by this session (however deep, even re-parented after its parent
died) and outlived it. Both are reported, then removed, so one leak does not pile up across
runs. Other runs on the same machine have their own dir, and what existed before the session
is never looked at. pytest's own tmp_path tree stays where it always is (with its retention).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SESSION_PREFIX = "rp-test-session-"
# Processes that were told to stop just before the session ended may need a moment to exit.
EXIT_WAIT_S = 5.0


@dataclass
class Leaks:
    temp_entries: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)


@dataclass
class SessionTemp:
    path: Path
    previous_env: str | None  # TMPDIR before the session
    previous_tempdir: str | None  # tempfile.tempdir before the session


_KEY = pytest.StashKey[SessionTemp]()
_LEAKS = pytest.StashKey[Leaks]()


def processes_with_env(entry: str) -> dict[int, str]:
    """pid -> command line of the live processes whose initial environment holds `entry`."""
    needle = b"\0" + entry.encode() + b"\0"
    found: dict[int, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in b"\0" + (proc / "environ").read_bytes():
                found[int(proc.name)] = (
                    (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
        except OSError:  # exited meanwhile, or not ours to read
            continue
    return found


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker runs under its controller's dir
        return
    previous = SessionTemp(Path(), os.environ.get("TMPDIR"), tempfile.tempdir)
    original_root = tempfile.gettempdir()
    session_dir = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir=original_root))
    # pytest's tmp_path tree keeps its usual place: it has its own retention and is kept for
    # looking into failures, unlike this dir.
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", original_root)
    os.environ["TMPDIR"] = str(session_dir)
    tempfile.tempdir = str(session_dir)
    previous.path = session_dir
    config.stash[_KEY] = previous


def pytest_sessionfinish(session: pytest.Session) -> None:
    stash = session.config.stash
    if _KEY not in stash:
        return
    saved = stash[_KEY]
    session_dir = saved.path
    marker = f"TMPDIR={session_dir}"
    deadline = time.monotonic() + EXIT_WAIT_S
    while (survivors := processes_with_env(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    leaks = Leaks(
        temp_entries=sorted(p.name for p in session_dir.iterdir()) if session_dir.exists() else [],
        processes=[f"pid {pid}: {command}" for pid, command in sorted(survivors.items())],
    )
    for pid in survivors:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(session_dir, ignore_errors=True)
    tempfile.tempdir = saved.previous_tempdir
    if saved.previous_env is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = saved.previous_env
    if leaks.temp_entries or leaks.processes:
        stash[_LEAKS] = leaks
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    leaks = config.stash.get(_LEAKS, None)
    if leaks is None:
        return
    terminalreporter.section("left behind by the tests", sep="=", red=True, bold=True)
    if leaks.temp_entries:
        terminalreporter.line(
            f"{len(leaks.temp_entries)} temp entr{'y' if len(leaks.temp_entries) == 1 else 'ies'}"
            f" (now removed): {', '.join(leaks.temp_entries)}"
        )
    for line in leaks.processes:
        terminalreporter.line(f"process (now killed) {line}")
    terminalreporter.line(
        "every test must remove the files and stop the processes it creates: "
        "use tmp_path and end processes in a finally/fixture teardown"
    )
