"""CLI: `python -m rp_devstack.comfyui_standin --port P --output-dir D [...]`.

Runs in the foreground until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

from rp_devstack.comfyui_standin.catalogue import CATALOGUE_ENV, CatalogueError
from rp_devstack.comfyui_standin.executor import FAULTS
from rp_devstack.comfyui_standin.standin import FAULT_ENV, ComfyStandin


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rp_devstack.comfyui_standin",
        description="ComfyUI stand-in: ComfyUI's HTTP+WS API, real H.264 outputs, no GPU.",
    )
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--input-dir", default=None, help="default: <output-dir>/../input")
    parser.add_argument("--temp-dir", default=None, help="default: <output-dir>/../temp")
    parser.add_argument("--step-seconds", type=float, default=0.01, help="sleep per sampler step")
    parser.add_argument(
        "--gpu-meter", default=None, help="append a JSON line per sampler step here"
    )
    parser.add_argument(
        "--fault",
        choices=FAULTS,
        default=os.environ.get(FAULT_ENV) or None,
        help=f"inject a failure into every prompt (default: ${FAULT_ENV})",
    )
    parser.add_argument(
        "--missing-models",
        action="store_true",
        help="pretend no model files are installed (prompts fail validation like a bare pod)",
    )
    parser.add_argument(
        "--catalogue",
        action="append",
        default=None,
        metavar="SNAPSHOT",
        help=f"an /object_info snapshot with more (custom) nodes; repeatable "
        f"(default: ${CATALOGUE_ENV}, several joined with {os.pathsep!r})",
    )
    parser.add_argument("--json", action="store_true", help="print the ready line as JSON")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.fault and args.fault not in FAULTS:  # an env default skips argparse's choices
        print(
            f"comfyui stand-in: unknown fault {args.fault!r} (use {', '.join(FAULTS)})",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        standin = ComfyStandin(
            output_dir=args.output_dir,
            input_dir=args.input_dir,
            host=args.host,
            port=args.port,
            step_seconds=args.step_seconds,
            fault=args.fault or "",
            models={} if args.missing_models else None,
            temp_dir=args.temp_dir,
            gpu_meter=args.gpu_meter,
            catalogues=args.catalogue,
        )
    except CatalogueError as ex:
        print(f"comfyui stand-in: {ex}", file=sys.stderr)
        return 2
    try:
        url = standin.start()
    except OSError as ex:
        print(f"comfyui stand-in: cannot listen on {args.host}:{args.port}: {ex}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"url": url, "output_dir": str(standin.output_dir)}), flush=True)
    else:
        print(f"ComfyUI stand-in on {url} writing to {standin.output_dir}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
