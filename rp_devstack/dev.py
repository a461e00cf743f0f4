"""`make dev`: the devstack plus the Dagster UI (`dg dev`) on http://127.0.0.1:3000 against it.

The devstack's variables go into `dg dev`'s environment (RP_ENV=devstack), the Dagster instance
lives in `.dagster_home/` (runs survive restarts), the devstack state in `.devstack/`. Ctrl-C or
SIGTERM stops `dg dev` (SIGINT to its process group, so the webserver and daemon shut down as
they do on Ctrl-C) and then every devstack process, pods included.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from rp_devstack.stack import Devstack

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rp-dev", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=PROJECT_ROOT / ".devstack")
    parser.add_argument("--dagster-home", type=Path, default=PROJECT_ROOT / ".dagster_home")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--boot-delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())

    stack = Devstack(args.state_dir, boot_delay_s=args.boot_delay)
    dagster: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        env_file = stack.write_env_file()
        args.dagster_home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **stack.env,
            "RP_ENV": "devstack",
            "DAGSTER_HOME": str(args.dagster_home.resolve()),
            "VIRTUAL_ENV": sys.prefix,
        }
        dagster = subprocess.Popen(
            [str(Path(sys.executable).with_name("dg")), "dev", "--use-active-venv",
             "--host", "127.0.0.1", "--port", str(args.port)],
            cwd=PROJECT_ROOT,
            env=env,
            preexec_fn=own_session_with_default_signals,
        )  # fmt: skip
        print(f"devstack up; env in {env_file}")
        print(f"Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C stops everything)", flush=True)
        while not stop.wait(0.5):
            if dagster.poll() is not None:
                print(f"dg dev exited with {dagster.returncode}", file=sys.stderr)
                return dagster.returncode or 1
        return 0
    except Exception as exc:
        print(f"make dev: {exc}", file=sys.stderr)
        return 1
    finally:
        if dagster is not None:
            stop_dg_dev(dagster)
        stack.stop()
        print("stopped Dagster and the devstack", flush=True)


def own_session_with_default_signals() -> None:
    """preexec_fn for `dg dev`: a process group of its own (our signal handling decides when it
    stops), and SIGINT/SIGTERM restored: a shell that started us in the background (nohup, `&`)
    leaves SIGINT ignored, children inherit that, and dagster dev maps SIGTERM onto its SIGINT
    handler, so without this neither signal would stop it."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_dg_dev(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C first (dagster dev shuts its webserver, daemon and code servers down on SIGINT),
    then harder; run workers and code servers share the group, so none may outlive it."""
    for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("dg dev did not stop on %s", sig.name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    raise SystemExit(main())
