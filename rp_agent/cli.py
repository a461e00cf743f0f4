"""`rp-agent sync | status | proxy | lease-watch`: every failure is one clear line and a non-zero
exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rp_agent import bootstatus, clock
from rp_agent.agent import AgentStartError, SyncAgent
from rp_agent.config import (
    DEFAULT_WORKERS,
    EXTENSIONS_ENV,
    STATE_DIR_ENV,
    AgentConfig,
    AgentConfigError,
    default_state_dir,
)
from rp_agent.keys import prefix_from_env
from rp_agent.lease import (
    DEFAULT_LEASE_S,
    DEFAULT_OUTAGE_S,
    DEFAULT_POLL_S,
    LEASE_ENV,
    OUTAGE_ENV,
    POLL_ENV,
    LeaseWatcher,
)
from rp_agent.paths import DEFAULT_EXTENSIONS
from rp_agent.pod_api import PodIdentity
from rp_agent.queue import UploadQueue
from rp_agent.r2 import R2ConfigError, R2Settings, make_r2_client

log = logging.getLogger("rp_agent")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# A second signal this soon after the first is the same stop delivered twice (see cmd_sync).
SAME_STOP_S = 2.0

STATE_HELP = (
    f"directory for the upload queue (default: ${STATE_DIR_ENV}, else "
    "~/.local/state/rp-agent/<hash of the watch dir>; never inside the watch dir)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rp-agent",
        description="Sync pod outputs to Cloudflare R2. Env: R2_ENDPOINT R2_BUCKET "
        "R2_ACCESS_KEY_ID R2_SECRET_ACCESS_KEY, optional R2_PREFIX (default outputs), "
        f"RUNPOD_POD_ID, {EXTENSIONS_ENV}.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    sync = sub.add_parser("sync", help="watch a directory and upload every finished file")
    sync.add_argument("--watch-dir", required=True, help="directory to sync (recursively)")
    sync.add_argument("--once", action="store_true", help="upload what is there, then exit")
    sync.add_argument("--state-dir", help=STATE_HELP)
    sync.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"parallel uploads (default {DEFAULT_WORKERS})",
    )
    sync.add_argument(
        "--rescan-interval", type=float, default=30.0, help="seconds between rescans (default 30)"
    )
    sync.add_argument(
        "--grace",
        type=float,
        default=20.0,
        help="seconds to finish uploads in flight after SIGTERM/SIGINT (default 20)",
    )
    sync.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds a file without a close event must stay unchanged before upload (default 1)",
    )
    sync.add_argument(
        "--extensions",
        help=f"extensions to sync, comma/space separated or '*' (default ${EXTENSIONS_ENV}, "
        f"else {' '.join(sorted(DEFAULT_EXTENSIONS))})",
    )

    status = sub.add_parser("status", help="show pending / done / failed counts and last errors")
    status.add_argument("--state-dir", help=STATE_HELP)
    status.add_argument("--watch-dir", help="find the default state dir of this watch dir")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    proxy = sub.add_parser(
        "proxy",
        help="serve ComfyUI only to holders of the pod's token (env RP_POD_TOKEN)",
        description="Authenticating reverse proxy for ComfyUI: forwards HTTP and WebSocket "
        "requests carrying the token (Authorization: Bearer, ?token= or the cookie it sets) "
        "and answers 401 to everything else; without RP_POD_TOKEN it refuses every request. "
        "Env RP_PROXY_HEADER_TIMEOUT_S (default 10): seconds a connection has to send its "
        "request headers; RP_PROXY_MAX_UNAUTHENTICATED (default 64): connections without the "
        "token held at once (the oldest is closed beyond that).",
    )
    proxy.add_argument("--listen", default="0.0.0.0:8188", help="HOST:PORT (default 0.0.0.0:8188)")
    proxy.add_argument(
        "--upstream", default="127.0.0.1:8189", help="ComfyUI's HOST:PORT (default 127.0.0.1:8189)"
    )

    lease = sub.add_parser(
        "lease-watch",
        help="terminate this pod once its run stops renewing the lease in R2",
        description="Env: R2_* as for sync, RUNPOD_POD_ID, RUNPOD_API_KEY, optional "
        f"RUNPOD_API_BASE_URL, {LEASE_ENV} (default {DEFAULT_LEASE_S:.0f}), {OUTAGE_ENV} "
        f"(default {DEFAULT_OUTAGE_S:.0f}).",
    )
    lease.add_argument(
        "--poll",
        type=float,
        help=f"seconds between reads (default ${POLL_ENV}, else {DEFAULT_POLL_S:.0f})",
    )
    phase = sub.add_parser(
        "boot-phase",
        help="record that this pod reached a start phase (file named by $RP_BOOT_STATUS)",
    )
    phase.add_argument("name", choices=bootstatus.PHASES, help="the phase this pod reached")
    supervise = sub.add_parser(
        "supervise",
        help="run a command and restart it with backoff whenever it ends (the image's policy)",
        description="Restarts COMMAND 1 s, 2 s, 4 s ... (at most 30 s) after each exit, back to "
        "1 s after a minute of running; SIGTERM/SIGINT is passed on once and ends the loop. Each "
        "run gets RP_AGENT_RESTARTS and RP_AGENT_LAST_EXIT in its environment.",
    )
    supervise.add_argument("--name", default="rp-agent", help="name in the log lines")
    supervise.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    return parser


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runpod-dagster")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown"


def cmd_supervise(args: argparse.Namespace) -> int:
    from rp_agent.supervise import main as supervise_main

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        return fail("supervise needs a command: rp-agent supervise --name NAME -- COMMAND...")
    return supervise_main(args.name, argv)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # botocore at debug level would print signed headers; keep it quiet.
    for noisy in ("botocore", "boto3", "urllib3", "watchdog", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"rp-agent: error: {message}", file=sys.stderr)
    return code


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        config = AgentConfig.build(
            args.watch_dir,
            state_dir=args.state_dir,
            workers=args.workers,
            rescan_interval=args.rescan_interval,
            grace=args.grace,
            extensions=args.extensions,
            settle_seconds=args.settle,
        )
    except (R2ConfigError, AgentConfigError) as exc:
        return fail(str(exc))
    stop = threading.Event()

    first_signal_at: list[float] = []

    def on_signal(signum: int, _frame: object) -> None:
        # The stop is recorded before anything is logged: a second signal may run this handler
        # again in the middle of the first one's logging call.
        name = signal.Signals(signum).name
        now = time.monotonic()
        if first_signal_at:
            if now - first_signal_at[0] < SAME_STOP_S:
                # The same stop reaching us twice: once to the process group, once passed on by
                # the supervisor (rp-agent supervise, start.sh). Not a reason to skip the flush.
                return
            # The queue is crash-safe, so a second signal may simply end the process now.
            log.warning("%s received again: exiting now; unfinished uploads stay queued", name)
            os._exit(EXIT_INTERRUPTED)
        first_signal_at.append(now)
        stop.set()
        log.info("%s received: finishing uploads in flight (grace %.0fs)", name, config.grace)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent = SyncAgent(config)
        code = agent.run(stop, once=args.once)
        # The work is flushed: a duplicate stop arriving while the interpreter shuts down (its
        # handlers already gone) must not turn a clean exit into death by signal.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        return code
    except AgentStartError as exc:
        return fail(str(exc))
    except (OSError, sqlite3.Error) as exc:
        return fail(f"cannot use state dir {config.state_dir}: {exc}")
    except Exception as exc:  # one line for the user; the traceback only with --verbose
        log.debug("unexpected error", exc_info=True)
        return fail(f"unexpected error: {type(exc).__name__}: {exc}", 1)


def resolve_state_dir(args: argparse.Namespace) -> Path | None:
    if args.state_dir:
        return Path(args.state_dir).expanduser()
    if args.watch_dir:
        return default_state_dir(Path(args.watch_dir).expanduser())
    base = default_state_dir(None)
    if (base / "queue.sqlite3").exists():
        return base  # $RP_AGENT_STATE_DIR points straight at a state dir
    dbs = sorted(base.glob("*/queue.sqlite3")) if base.is_dir() else []
    return dbs[0].parent if len(dbs) == 1 else None


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = resolve_state_dir(args)
    if state_dir is None:
        return fail("no unique state dir found: pass --state-dir or --watch-dir")
    db = state_dir / "queue.sqlite3"
    if not db.exists():
        return fail(f"no queue in {state_dir}: has `rp-agent sync` run with this state dir?")
    queue = UploadQueue(db)
    try:
        counts = queue.counts()
        errors = queue.last_errors(10)
    finally:
        queue.close()
    if args.json:
        print(
            json.dumps(
                {
                    "state_dir": str(state_dir),
                    "counts": counts,
                    "last_errors": [
                        {
                            "path": row.display,
                            "key": row.key,
                            "state": row.state,
                            "attempts": row.attempts,
                            "error": row.last_error,
                            "at": row.updated_at,
                        }
                        for row in errors
                    ],
                },
                indent=2,
            )
        )
        return 0
    print(f"state dir: {state_dir}")
    print("  ".join(f"{state}: {n}" for state, n in counts.items()))
    for row in errors:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.updated_at))
        print(f"{row.state:8} {when}Z {row.display}: {row.last_error}")
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from rp_agent.conn_guard import (
        DEFAULT_HEADER_TIMEOUT_S,
        DEFAULT_MAX_UNAUTHENTICATED,
        HEADER_TIMEOUT_ENV,
        MAX_UNAUTHENTICATED_ENV,
        ConnectionLimits,
    )
    from rp_agent.proxy import TOKEN_ENV, parse_address, serve

    try:
        parse_address(args.listen)
        parse_address(args.upstream)
        cap_text = (os.environ.get(MAX_UNAUTHENTICATED_ENV) or "").strip()
        if cap_text and not cap_text.isdigit():
            raise ValueError(f"{MAX_UNAUTHENTICATED_ENV}={cap_text!r} is not a whole number")
        limits = ConnectionLimits(
            header_timeout_s=_seconds_env(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT_S),
            max_unauthenticated=int(cap_text) if cap_text else DEFAULT_MAX_UNAUTHENTICATED,
        )
    except (ValueError, AgentConfigError) as exc:
        return fail(str(exc))
    try:
        serve(args.listen, args.upstream, os.environ.get(TOKEN_ENV), limits)
    except OSError as exc:
        return fail(f"cannot listen on {args.listen}: {exc}", 1)
    return 0


def _seconds_env(name: str, default: float) -> float:
    text = os.environ.get(name) or ""
    try:
        return float(text) if text.strip() else default
    except ValueError:
        raise AgentConfigError(f"{name}={text!r} is not a number of seconds") from None


def cmd_lease_watch(args: argparse.Namespace) -> int:
    try:
        lease_s = _seconds_env(LEASE_ENV, DEFAULT_LEASE_S)
        outage_s = _seconds_env(OUTAGE_ENV, DEFAULT_OUTAGE_S)
        if lease_s <= 0:
            print(f"rp-agent: {LEASE_ENV}={lease_s:g}: lease disabled, nothing to watch")
            return 0
        poll_s = args.poll if args.poll is not None else _seconds_env(POLL_ENV, DEFAULT_POLL_S)
        if poll_s <= 0:
            raise AgentConfigError(f"the poll interval must be > 0, got {poll_s:g}")
        settings = R2Settings.from_env()
        pod = PodIdentity.from_env()
    except (R2ConfigError, AgentConfigError, ValueError) as exc:
        return fail(str(exc))
    watcher = LeaseWatcher(
        make_r2_client(settings),
        settings.bucket,
        prefix_from_env(),
        pod,
        lease_s=lease_s,
        poll_s=poll_s,
        outage_s=outage_s,
    )

    def on_signal(_signum: int, _frame: object) -> None:
        # Nothing to flush: leave at once, even from the middle of an API call (the pod's own
        # terminate call is answered by stopping this very process).
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return watcher.run(threading.Event())


def cmd_boot_phase(args: argparse.Namespace) -> int:
    path = bootstatus.status_path()
    if path is None:
        return fail(f"{bootstatus.BOOT_STATUS_ENV} is not set: no boot status file to write")
    try:
        bootstatus.update(path, phase=args.name)
    except OSError as exc:
        return fail(f"cannot write the boot status file {path}: {exc.strerror}", 1)
    return 0


COMMANDS = {
    "sync": cmd_sync,
    "status": cmd_status,
    "proxy": cmd_proxy,
    "lease-watch": cmd_lease_watch,
    "boot-phase": cmd_boot_phase,
    "supervise": cmd_supervise,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    if clock.SKEW_ERROR:
        return fail(clock.SKEW_ERROR)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
