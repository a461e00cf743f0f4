"""`make demo`: one batch of four videos through Dagster on the embedded devstack.

Starts the devstack (local S3, RunPod emulator with local pods running the ComfyUI stand-in and
rp-agent) in a temp dir, a real Dagster instance in a temporary DAGSTER_HOME, materializes
`video_requests`, then four `generated_video` partitions in ONE run on a fleet of two pods
(RP_MAX_PODS=2, RP_VIDEOS_PER_POD=2 unless set), then
`video_preview` + `video_catalog`; prints the assets and their metadata, checks that no pod is
left running, and always stops the devstack. Exit 0 on success, 1 with a reason otherwise.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from rp_pipeline.settings import DEFAULT_PROMPTS_DIR, exit_on_problems, read_settings, set_defaults

console = Console(highlight=False, width=max(Console().width, 120))
DEMO_VIDEOS = 4
# Two pods side by side, two videos each, unless the environment says otherwise.
DEMO_FLEET = {"RP_MAX_PODS": "2", "RP_VIDEOS_PER_POD": "2"}
# Dagster's console logger would print every event; the demo prints its own progress lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class DemoError(RuntimeError):
    pass


def step(message: str) -> None:
    console.print(f"[bold cyan]>[/] {message}")


def _value(entry: Any) -> Any:
    return getattr(entry, "value", getattr(entry, "text", entry))


def materializations(instance: Any, asset: str) -> list[Any]:
    from dagster import AssetKey

    return list(instance.fetch_materializations(AssetKey(asset), limit=100).records)


def settled_costs(instance: Any, keys: list[str]) -> dict[str, float]:
    """Each partition's settled cost: the `cost_settled` AssetObservation recorded once its pod
    ended (the materialization's `cost_usd` is only the provisional share)."""
    from rp_pipeline.asset_keys import GENERATED_VIDEO

    records = instance.fetch_observations(GENERATED_VIDEO, limit=1000).records
    costs: dict[str, float] = {}
    for record in records:  # newest first
        md = record.asset_observation.metadata
        if record.partition_key not in costs and _value(md.get("cost_settled")) is True:
            costs[record.partition_key] = float(_value(md["cost_usd"]))
    missing = [key for key in keys if key not in costs]
    if missing:
        raise DemoError(f"no settled cost recorded for {missing}")
    return costs


def print_videos(instance: Any, keys: list[str]) -> None:
    records = {r.partition_key: r for r in materializations(instance, "generated_video")}
    table = Table(title="generated_video (one partition per request)", show_lines=False)
    for column in (
        "partition",
        "source",
        "size",
        "WxH",
        "frames@fps",
        "dur s",
        "gen s",
        "queue s",
        "upload s",
        "cost $",
    ):
        table.add_column(column, overflow="fold")
    # Printed to 5 decimals; the total is the sum of the printed figures.
    costs = {key: round(cost, 5) for key, cost in settled_costs(instance, keys).items()}
    for key in keys:
        md = {k: _value(v) for k, v in records[key].asset_materialization.metadata.items()}
        table.add_row(
            key,
            str(md["r2_source"]),
            f"{md['size_bytes']:,}",
            f"{md['width']}x{md['height']}",
            f"{md['frames']}@{md['fps']:g}",
            f"{md['duration_s']:.2f}",
            _fmt(md["generation_time_s"]),
            _fmt(md["queue_wait_s"]),
            _fmt(md["upload_latency_s"], 3),  # a small upload takes milliseconds
            f"{costs[key]:.5f}",
        )
    table.add_section()
    table.add_row("total", *[""] * 8, f"{sum(costs[key] for key in keys):.5f}")
    console.print(table)
    for key in keys:
        md = records[key].asset_materialization.metadata
        console.print(f"  {key} -> r2://{_value(md['r2_bucket'])}/{_value(md['r2_key'])}")
    first = {k: _value(v) for k, v in records[keys[0]].asset_materialization.metadata.items()}
    console.print(
        f"  metadata keys per partition: {', '.join(sorted(first))}\n"
        f"  e.g. pod {first['pod_id']} ({first['gpu_type']}, ${first['cost_per_hr']}/h), batch of "
        f"{first['batch_size']}; seed={first['seed']} workflow={first['workflow']} "
        f"hash={str(first['workflow_hash'])[:12]} sha256={str(first['sha256'])[:16]}... "
        f"pod_seconds={first['pod_seconds']:.1f}s r2_url={first['r2_url']}"
    )


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def print_assets(instance: Any) -> None:
    table = Table(title="assets in the instance")
    for column in ("asset", "materializations", "latest metadata"):
        table.add_column(column, overflow="fold")
    for asset in ("video_requests", "generated_video", "video_preview", "video_catalog"):
        records = materializations(instance, asset)
        latest = records[0].asset_materialization.metadata if records else {}
        shown = {
            k: _value(v)
            for k, v in latest.items()
            if k
            in {"requests", "new_partitions", "videos", "external_videos", "index_key", "pod_id"}
        }
        table.add_row(asset, str(len(records)), ", ".join(f"{k}={v}" for k, v in shown.items()))
    console.print(table)


def run_demo(workdir: Path) -> None:
    from rp_devstack.stack import Devstack

    step("starting the devstack (local S3, RunPod emulator, local pods)")
    stack = Devstack(workdir / "devstack", boot_delay_s=0.5)
    try:
        stack.start()
        home = stack.use_in_this_process(workdir / "dagster_home")
        step(f"devstack up; Dagster instance in {home}")
        materialize_batch(stack)
    finally:
        step("stopping the devstack")
        stack.stop()


def materialize_batch(stack: Any) -> None:
    from dagster import DagsterInstance, materialize

    from rp_pipeline.definitions import build_definitions, resources_for
    from rp_pipeline.defs.previews.assets import video_catalog, video_preview
    from rp_pipeline.defs.requests.assets import video_requests
    from rp_pipeline.defs.videos.assets import generated_video
    from rp_pipeline.tools.batch import materialize_batch
    from rp_pipeline.video_requests.model import load_request_file
    from rp_pipeline.video_requests.store import VIDEO_REQUESTS_PARTITIONS

    build_definitions("devstack")  # the code location loads against this environment
    resources = resources_for("devstack")
    with DagsterInstance.get() as instance:
        step("materializing video_requests from prompts/examples.yaml")
        result = materialize(
            [video_requests], instance=instance, resources=resources, run_config=QUIET
        )
        if not result.success:
            raise DemoError("video_requests failed")
        registered = instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS)
        examples = DEFAULT_PROMPTS_DIR / "examples.yaml"
        keys = [r.key for r in load_request_file(examples)][:DEMO_VIDEOS]
        missing = [k for k in keys if k not in registered]
        if missing:
            raise DemoError(f"partitions not registered: {missing}")
        step(
            f"{len(registered)} partitions registered; generating {len(keys)} in ONE run on up "
            f"to {read_settings().max_pods} pods:"
        )
        for key in keys:
            console.print(f"    - {key}")
        started = time.time()
        result = materialize_batch(instance, resources, keys, run_config=QUIET)
        if not result.success:
            raise DemoError(f"generated_video run {result.run_id} failed (see logs above)")
        step(f"batch run {result.run_id[:8]} succeeded in {time.time() - started:.1f} s")
        pods = [p for p in stack.emulator.pods() if p.get("name", "").startswith("dagster-")]
        batch_pods = [p for p in pods if result.run_id[:8] in p.get("name", "")]
        limit = read_settings().max_pods or 1
        step(
            f"pods launched for the batch: {len(batch_pods)} side by side for {len(keys)} videos "
            f"(RP_MAX_PODS={limit}); billed ${sum(p['cost'] for p in batch_pods):.5f} in all"
        )
        if not 1 <= len(batch_pods) <= limit:
            raise DemoError(f"expected 1..{limit} pods for the batch, saw {len(batch_pods)}")
        step("materializing video_preview + video_catalog")
        result = materialize(
            [generated_video, video_preview, video_catalog],
            selection=[video_preview, video_catalog],
            instance=instance,
            resources=resources,
            run_config=QUIET,
        )
        if not result.success:
            raise DemoError("video_preview/video_catalog failed")
        print_videos(instance, keys)
        print_assets(instance)
        running = [p for p in stack.emulator.pods() if p.get("desired_status") != "TERMINATED"]
        if running:
            raise DemoError(f"pods still running: {[p.get('id') for p in running]}")
        step("pods left running on the emulator: 0")


def main() -> int:
    logging.basicConfig(level=logging.WARNING)
    set_defaults(DEMO_FLEET)
    exit_on_problems(read_settings().problems, "rp-demo")  # before the devstack starts
    with tempfile.TemporaryDirectory(prefix="rp-demo-") as tmp:
        try:
            run_demo(Path(tmp))
        except Exception as exc:
            console.print(f"[bold red]demo failed:[/] {exc}")
            return 1
    console.print("[bold green]demo ok[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
