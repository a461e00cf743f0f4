"""`rp-launch`: launch, wait for, open, terminate and list RunPod pods from a shell.

Reads RUNPOD_API_KEY (and RUNPOD_API_BASE_URL, e.g. the devstack's; RUNPOD_API=graphql to use
RunPod's GraphQL API instead of REST v2) from the environment.
Every failure prints one line on stderr and exits non-zero (with `--json`, also a JSON object
with `error` on stdout):
  1 other RunPod error, 2 bad usage or configuration, 3 API key rejected,
  4 no capacity / unknown GPU / cost cap, 5 pod not ready (timeout, exited), 6 network error,
  130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rp_pipeline.fleet.warm_pods import idle_pod_ids_from_env
from rp_pipeline.integrations.runpod.client import RunPodClient
from rp_pipeline.integrations.runpod.errors import (
    NoCapacityError,
    PodLaunchError,
    PodNotReadyError,
    RunPodAuthError,
    RunPodConfigError,
    RunPodError,
    RunPodTransientError,
    UnknownGpuError,
)
from rp_pipeline.integrations.runpod.pods import (
    CLOUD_TYPES,
    COMFYUI_PORT,
    DEFAULT_GPU_TYPES,
    DEFAULT_PORTS,
    NO_IMAGE,
    PodSpec,
    ReadyPod,
    port_url,
)
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token, pod_token
from rp_pipeline.settings import value_of
from rp_pipeline.tools import doctor, workflow
from rp_pipeline.tools import gpus as gpu_listing
from rp_pipeline.tools.help import Parser, package_version

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (RunPodConfigError, 2),
    (RunPodAuthError, 3),
    (NoCapacityError, 4),
    (UnknownGpuError, 4),
    (PodNotReadyError, 5),
    (RunPodTransientError, 6),
    (PodLaunchError, 1),
    (RunPodError, 1),
]


# A person at a shell would rather see the error soon and decide: reads give up after this
# (the pipeline's clients wait longer). Creates keep the client's attempts and name lookup.
READ_PATIENCE_S = 5.0


class UsageError(Exception):
    """A configuration problem on our side (exit 2)."""


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log API steps to stderr")

    parser = Parser(
        prog="rp-launch",
        description="Launch, wait for, list and terminate RunPod pods. Reads RUNPOD_API_KEY "
        "and RUNPOD_API_BASE_URL (e.g. `source .devstack/env`).",
        epilog="exit codes: 1 RunPod error, 2 usage/config, 3 API key rejected, 4 no capacity/"
        "unknown GPU/cost cap, 5 pod not ready, 6 network error, 130 interrupted",
    )
    # Also accepted before the command; own dests, since a subparser's defaults would
    # overwrite values the main parser set.
    parser.add_argument(
        "--json", dest="json_first", action="store_true",
        help="machine-readable output on stdout (also accepted after the command)",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", dest="verbose_first", action="store_true",
        help="log API steps to stderr (also accepted after the command)",
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    launch = sub.add_parser("launch", parents=[common], help="create a pod (GPU fallback)")
    launch.add_argument(
        "--gpu",
        action="append",
        dest="gpus",
        metavar="GPU_TYPE_ID",
        help="GPU type id, repeatable, in order of preference "
        f"(default: {', '.join(DEFAULT_GPU_TYPES)})",
    )
    launch.add_argument(
        "--cloud-type", choices=CLOUD_TYPES, default="ALL",
        help="SECURE, COMMUNITY or ALL (a network volume forces SECURE)",
    )  # fmt: skip
    launch.add_argument(
        "--network-volume",
        default=value_of("RUNPOD_NETWORK_VOLUME_ID"),
        help="network volume id, or several comma-separated (one per datacenter) "
        "(default: $RUNPOD_NETWORK_VOLUME_ID); forces SECURE cloud",
    )
    launch.add_argument("--no-network-volume", action="store_true", help="attach no volume")
    launch.add_argument(
        "--image",
        default=value_of("RP_IMAGE"),
        help="container image (default: $RP_IMAGE); with --template-id and no image, the "
        "template's image runs",
    )
    launch.add_argument(
        "--template-id",
        default=value_of("RUNPOD_TEMPLATE_ID"),
        help="RunPod template id (default: $RUNPOD_TEMPLATE_ID; `rp-launch template sync` prints it)",
    )
    launch.add_argument("--name", help="readable part of the pod name")
    launch.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE",
        help="an env variable for the pod, repeatable (RunPod secret references pass as they are)",
    )  # fmt: skip
    launch.add_argument(
        "--ports", default=DEFAULT_PORTS, help="ports to expose; must include 8188/http (ComfyUI)"
    )
    launch.add_argument("--container-disk", type=int, default=20, help="GB")
    launch.add_argument("--volume-size", type=int, default=100, help="GB (no network volume)")
    launch.add_argument("--max-cost", type=float, help="refuse GPU types above this $/hr")
    launch.add_argument("--interruptible", action="store_true", help="spot pod")
    launch.add_argument("--bid", type=float, help="spot bid per GPU, $/hr")
    launch.add_argument("--run-id", help="run id to tag the pod with (default: a new uuid)")
    launch.add_argument("--wait", action="store_true", help="wait until ComfyUI answers")
    launch.add_argument("--timeout", type=float, default=300.0, help="readiness deadline, s")
    launch.add_argument(
        "--keep-on-timeout", action="store_true", help="do not terminate a pod that is not ready"
    )

    wait = sub.add_parser("wait", parents=[common], help="wait until a pod's ComfyUI answers")
    wait.add_argument("pod_id", help="the pod's id (rp-launch list shows them)")
    wait.add_argument("--timeout", type=float, default=300.0, help="readiness deadline, s")
    wait.add_argument("--port", type=int, default=COMFYUI_PORT, help="ComfyUI's port in the pod")
    wait.add_argument(
        "--terminate-on-timeout", action="store_true", help="terminate the pod if not ready"
    )

    # No --json: its one output is a URL carrying the pod's token, kept out of machine output.
    opener = sub.add_parser(
        "open", help="print a browser URL for the pod's ComfyUI (carries the pod's token)"
    )
    opener.add_argument("pod_id", help="the pod's id")
    opener.add_argument("-v", "--verbose", action="store_true", help="log API steps to stderr")

    terminate = sub.add_parser("terminate", parents=[common], help="terminate a pod (idempotent)")
    terminate.add_argument("pod_id", help="the pod's id")

    listing = sub.add_parser("list", parents=[common], help="list pods")
    listing.add_argument("--prefix", help="only pods whose name starts with this")

    gpus_parser = sub.add_parser(
        "gpus", parents=[common], help="GPU types with prices, stock and measured $/video"
    )
    gpu_listing.add_arguments(gpus_parser)

    template = sub.add_parser("template", parents=[common], help="pod templates")
    template_sub = template.add_subparsers(dest="template_command", required=True)
    sync = template_sub.add_parser("sync", parents=[common], help="create/update from a file")
    sync.add_argument(
        "--file", type=Path, default=Path("docker/runpod-template.yaml"),
        help="the template as code (YAML); prints the template id to set as RUNPOD_TEMPLATE_ID",
    )  # fmt: skip
    sub.add_parser(
        "doctor",
        parents=[common],
        help="check the setup before it spends anything: key, volumes, GPU stock, image or "
        "template, R2 (one probe object), Dagster; exit 1 if a check fails",
    )
    workflow.add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:  # `rp-launch ... | head` closed the pipe: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    args.json = getattr(args, "json", False) or args.json_first
    args.verbose = args.verbose or args.verbose_first
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # Retries are logged as warnings; without -v only the final one-line error shows.
        logging.getLogger("rp_pipeline").setLevel(logging.ERROR)
    if args.command == "workflow":  # no RunPod key or call
        return workflow.run(args)
    try:
        client = _client()
        result = COMMANDS[args.command](client, args)
    except KeyboardInterrupt:
        return _fail(
            args, "interrupted; `rp-launch list` shows any pod left behind", 130, "Interrupted"
        )
    except (UsageError, gpu_listing.NoInstanceError) as exc:
        return _fail(args, str(exc), 2, "UsageError")
    except RunPodError as exc:
        code = next(c for t, c in EXIT_CODES if isinstance(exc, t))
        return _fail(args, str(exc), code, type(exc).__name__)
    except Exception as exc:  # the promise: one line, never a traceback
        return _fail(args, f"unexpected {type(exc).__name__}: {exc}", 1, type(exc).__name__)
    _emit(args, result)
    return 1 if args.command == "doctor" and not result["ok"] else 0


def _client() -> RunPodClient:
    key = value_of("RUNPOD_API_KEY")
    if not key:
        raise UsageError(
            "RUNPOD_API_KEY is not set: export it (RunPod console > Settings > API Keys) "
            "or `source <devstack state dir>/env`"
        )
    # RUNPOD_API_BASE_URL is read by RunPodClient
    return RunPodClient(key, read_patience_s=READ_PATIENCE_S)


def cmd_launch(client: RunPodClient, args: argparse.Namespace) -> dict[str, Any]:
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r} is not KEY=VALUE")
        env[key] = value
    if args.bid is not None and not args.interruptible:
        raise UsageError("--bid only applies with --interruptible")
    if not args.image and not args.template_id:
        raise UsageError(NO_IMAGE.replace("set RP_IMAGE", "pass --image or set RP_IMAGE"))
    # The pod's ComfyUI answers only this token; `rp-launch open` reads it back from the pod.
    env.setdefault(POD_TOKEN_ENV, new_pod_token())
    # No run renews a lease for a pod launched by hand: it runs until `rp-launch terminate`
    # unless `--env RP_POD_LEASE_S=<seconds>` asks it to end itself.
    env.setdefault("RP_POD_LEASE_S", "0")
    spec = PodSpec(
        image=args.image or "",
        gpu_types=args.gpus or list(DEFAULT_GPU_TYPES),
        cloud_type=args.cloud_type,
        network_volume_id=None if args.no_network_volume else args.network_volume,
        template_id=args.template_id,
        container_disk_gb=args.container_disk,
        volume_gb=args.volume_size,
        ports=args.ports,
        env=env,
        interruptible=args.interruptible,
        bid_per_gpu=args.bid,
        max_cost_per_hr=args.max_cost,
        name=args.name,
    )
    run_id = args.run_id or f"cli-{uuid.uuid4().hex}"
    gpus = ", ".join(spec.gpu_types)
    with _spinner(args, f"creating a pod ({gpus}, first in stock)"):
        pod = client.launch(spec, run_id)
    result: dict[str, Any] = {"pod": pod.summary(), "comfyui_url": None}
    _say(args, f"launched pod {pod.id} ({pod.name}) on {pod.gpu_type} at ${pod.cost_per_hr}/hr")
    if not args.wait:
        _say(args, f"it bills from now; `rp-launch wait {pod.id}` follows it until ComfyUI answers")
    if args.wait:
        try:
            ready = _wait(client, args, pod.id, COMFYUI_PORT, not args.keep_on_timeout)
        except KeyboardInterrupt:
            client.terminate(pod.id)
            raise
        result["comfyui_url"] = ready.comfyui_url
        _say(args, f"ready: ComfyUI at {ready.comfyui_url} (browser: rp-launch open {pod.id})")
    return result


def cmd_wait(client: RunPodClient, args: argparse.Namespace) -> dict[str, Any]:
    ready = _wait(client, args, args.pod_id, args.port, args.terminate_on_timeout)
    _say(args, f"ready: ComfyUI at {ready.comfyui_url}")
    return {"pod": ready.pod.summary(), "comfyui_url": ready.comfyui_url}


def cmd_open(client: RunPodClient, args: argparse.Namespace) -> None:
    if args.json:
        raise UsageError("open has no --json form: its output carries the pod's token")
    pod = client.get(args.pod_id)
    if pod is None:
        raise UsageError(f"pod {args.pod_id} does not exist (terminated?): `rp-launch list`")
    token = pod_token(pod)
    if token is None:
        raise UsageError(
            f"pod {pod.id} was launched without {POD_TOKEN_ENV}: its ComfyUI refuses every "
            "request; launch a new pod with `rp-launch launch`"
        )
    url = port_url(pod.id, pod.runtime_ports, COMFYUI_PORT)
    if url is None:
        raise UsageError(f"pod {pod.id} has no ComfyUI port yet: `rp-launch wait {pod.id}`")
    # Printed, never passed on a command line: the token stays out of shell history. The proxy
    # swaps it for a cookie at once and drops it from the address bar.
    print(f"{url}/?token={token}", flush=True)


def cmd_terminate(client: RunPodClient, args: argparse.Namespace) -> dict[str, Any]:
    client.terminate(args.pod_id)
    _say(args, f"pod {args.pod_id} terminated")
    return {"pod_id": args.pod_id, "terminated": True}


def cmd_list(client: RunPodClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    pods = client.list_pods(name_prefix=args.prefix)
    idle = idle_pod_ids_from_env(p.id for p in pods)  # warm pods waiting for a run (R2 leases)
    if not args.json:
        for pod in pods:
            print(
                f"{pod.id:16} {pod.status or pod.desired_status:12} ${pod.cost_per_hr}/hr  "
                f"{pod.gpu_type}  {pod.datacenter or '-'}  {pod.name}"
                + ("  [idle]" if pod.id in idle else "")
            )
        if not pods:
            print("no pods")
    return [{**p.summary(), "idle": p.id in idle} for p in pods]


def cmd_template(client: RunPodClient, args: argparse.Namespace) -> dict[str, Any]:
    try:
        module = importlib.import_module("rp_pipeline.tools.template")
    except ModuleNotFoundError as exc:
        if exc.name != "rp_pipeline.tools.template":
            raise
        raise UsageError("template sync is not available in this install") from None
    sync_template: Callable[[RunPodClient, Path], dict[str, Any]] = module.sync_template
    if not args.file.exists():
        raise UsageError(f"template file {args.file} does not exist")
    result = sync_template(client, args.file)
    _say(args, f"template {result.get('name')} saved (id {result.get('id')})")
    _say(args, f"runs use it with: export RUNPOD_TEMPLATE_ID={result.get('id')}")
    return result


COMMANDS: dict[str, Callable[[RunPodClient, argparse.Namespace], Any]] = {
    "launch": cmd_launch,
    "wait": cmd_wait,
    "open": cmd_open,
    "terminate": cmd_terminate,
    "list": cmd_list,
    "gpus": gpu_listing.command,
    "template": cmd_template,
    "doctor": doctor.command,
}


def _wait(
    client: RunPodClient, args: argparse.Namespace, pod_id: str, port: int, terminate: bool
) -> ReadyPod:
    with _spinner(args, f"waiting for pod {pod_id}") as on_state:
        return client.wait_until_ready(
            pod_id,
            port=port,
            deadline_s=args.timeout,
            terminate_on_timeout=terminate,
            on_state=on_state,
        )


@contextmanager
def _spinner(args: argparse.Namespace, title: str) -> Iterator[Callable[[str], None] | None]:
    """A rich spinner on an interactive stderr; silence otherwise (stderr is for errors)."""
    if args.json or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console

    with Console(stderr=True).status(title) as status:
        yield lambda state: status.update(f"{title}: {state}")


def _say(args: argparse.Namespace, line: str) -> None:
    if not args.json:
        print(line, flush=True)


def _emit(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))


def _fail(args: argparse.Namespace, message: str, code: int, kind: str) -> int:
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"rp-launch: error: {line}", file=sys.stderr, flush=True)
    if getattr(args, "json", False):
        print(json.dumps({"error": kind, "message": line, "exit_code": code}))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
