"""`python -m rp_devstack.runpod_emulator`: the emulator alone, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from rp_devstack.runpod_emulator.server import RunPodEmulator
from rp_devstack.runpod_emulator.state import DEFAULT_API_KEY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Offline RunPod API with local pods")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--boot-delay", type=float, default=1.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    emulator = RunPodEmulator(
        args.state_dir, args.api_key, port=args.port, boot_delay_s=args.boot_delay
    ).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"RUNPOD_API_BASE_URL={emulator.base_url}", flush=True)
    stop.wait()
    emulator.stop()
    return 0
