"""`rp-devstack up --state-dir DIR`: run the offline stack in the foreground until SIGINT/SIGTERM.

Writes DIR/env (`export` lines, `source` it) and DIR/devstack.pid; on a signal stops every
process it started, pods included. `rp-devstack down --state-dir DIR` signals a running `up`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from rp_devstack.stack import Devstack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rp-devstack",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up",
        help="start the devstack and stay in the foreground",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    up.add_argument(
        "--state-dir", required=True, type=Path,
        help="where the stack keeps its state; it writes DIR/env (`source DIR/env`)",
    )  # fmt: skip
    up.add_argument("--boot-delay", type=float, default=1.0, help="pod boot delay, seconds")
    up.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING or ERROR")
    down = sub.add_parser("down", help="stop the devstack running for --state-dir")
    down.add_argument(
        "--state-dir", required=True, type=Path, help="the state dir the stack was started with"
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args.state_dir, args.boot_delay, args.log_level)
    return _down(args.state_dir)


def _up(state_dir: Path, boot_delay: float, log_level: str) -> int:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = threading.Event()
    # Handlers first: a signal during start-up must still lead to a full stop.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    stack = Devstack(state_dir, boot_delay_s=boot_delay)
    try:
        stack.start()
        env_file = stack.write_env_file()
        pid_file = stack.state_dir / "devstack.pid"
        pid_file.write_text(f"{os.getpid()}\n")
        print(f"devstack up (state {stack.state_dir})")
        print(
            f"  RunPod API   {stack.env['RUNPOD_API_BASE_URL']}  (volume {stack.env['RUNPOD_NETWORK_VOLUME_ID']})"
        )
        print(f"  S3 / R2      {stack.env['R2_ENDPOINT']}  bucket {stack.env['R2_BUCKET']}")
        print(f"  ComfyUI      {stack.env['COMFYUI_STANDALONE_URL']}")
        print(f"  env file     source {env_file}")
        print("Ctrl-C or SIGTERM stops everything.", flush=True)
        while not stop.wait(0.5):
            pass
    except Exception as exc:
        print(f"rp-devstack: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        (stack.state_dir / "devstack.pid").unlink(missing_ok=True)
    print("devstack stopped", flush=True)
    return 0


def _down(state_dir: Path) -> int:
    pid_file = state_dir.resolve() / "devstack.pid"
    if not pid_file.exists():
        print(f"no devstack running for {state_dir}")
        return 0
    pid = int(pid_file.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        print(f"rp-devstack: devstack pid {pid} was already gone", file=sys.stderr)
        return 0
    deadline = time.monotonic() + 60
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    print("devstack stopped" if not pid_file.exists() else f"devstack pid {pid} still stopping")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runpod-dagster")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"
