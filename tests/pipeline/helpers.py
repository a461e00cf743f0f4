"""Shared steps of the pipeline tests: request files, materializing batches, reading pods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, DagsterInstance, materialize

from rp_pipeline.defs.previews.assets import video_catalog, video_preview
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.integrations.replace import replace_fields
from rp_pipeline.tools.batch import materialize_batch
from rp_pipeline.video_requests.model import VideoRequest

SMALL = {"width": 320, "height": 192, "frames": 9, "fps": 8}


def write_prompts(directory: Path, tag: str, count: int) -> list[str]:
    """A prompts file with `count` small requests; their partition keys in file order."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = [
        {"prompt": f"{tag} scene {i}, a slow pan over hills", "seed": 100 + i, "params": SMALL}
        for i in range(count)
    ]
    (directory / f"{tag}.yaml").write_text(yaml.safe_dump({"requests": entries}))
    return [VideoRequest.from_dict({**e, "workflow": "wan22_ti2v_5b"}).key for e in entries]


def register_requests(instance: DagsterInstance, resources: dict[str, Any]) -> None:
    result = materialize([video_requests], instance=instance, resources=resources)
    assert result.success


def generate(
    instance: DagsterInstance, resources: dict[str, Any], keys: list[str], **kwargs: Any
) -> Any:
    """One run over `keys` (a partition range), as a single-run backfill launches it."""
    return materialize_batch(instance, resources, keys, **kwargs)


def preview_and_catalog(instance: DagsterInstance, resources: dict[str, Any], **kw: Any) -> Any:
    return materialize(
        [generated_video, video_preview, video_catalog],
        selection=[video_preview, video_catalog],
        instance=instance,
        resources=resources,
        **kw,
    )


def latest_by_partition(instance: DagsterInstance) -> dict[str, dict[str, Any]]:
    records = instance.fetch_materializations(AssetKey("generated_video"), limit=1000).records
    found: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        if record.partition_key not in found:
            md = record.asset_materialization.metadata
            found[record.partition_key] = {k: getattr(v, "value", v) for k, v in md.items()}
    return found


def settled_by_partition(instance: DagsterInstance) -> dict[str, dict[str, Any]]:
    """The latest settled-cost observation of each generated_video partition."""
    records = instance.fetch_observations(AssetKey("generated_video"), limit=1000).records
    found: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first
        md = record.asset_observation.metadata  # type: ignore[union-attr]
        if record.partition_key not in found and "cost_settled" in md:
            found[record.partition_key] = {k: getattr(v, "value", v) for k, v in md.items()}
    return found


def materialization_times(instance: DagsterInstance, run_id: str) -> list[float]:
    """Event timestamps of the run's generated_video materializations, in order."""
    records = instance.fetch_materializations(AssetKey("generated_video"), limit=1000).records
    return sorted(r.timestamp for r in records if r.run_id == run_id)


def run_messages(instance: DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


def pods_of_run(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    return [p for p in emulator.pods() if p["env"].get("DAGSTER_RUN_ID") == run_id]


def with_settings(resources: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same resources with some GenerationSettings fields changed."""
    return {**resources, "settings": replace_fields(resources["settings"], **changes)}


def r2_now() -> Any:
    """An R2Resource with values resolved from os.environ (for asserting outside a run)."""
    from rp_pipeline.tools.video import r2_from_env

    return r2_from_env()


def tick(
    sensor: Any, instance: DagsterInstance, resources: dict[str, Any], cursor: str | None = None
) -> tuple[Any, str | None]:
    """One sensor evaluation; (result, cursor after). The context opens its own instance from
    the ref; `with` closes it in order (an unclosed one breaks later Dagster loads)."""
    from dagster import build_sensor_context

    with build_sensor_context(instance=instance, resources=resources, cursor=cursor) as context:
        result = sensor(context)
        return result, getattr(result, "cursor", None) or context.cursor


def run_batch_processes(
    keys: list[str], env: dict[str, str], pod_env: dict[str, str], logs_dir: Path
) -> list[str]:
    """One generated_video run per key, each in its own process, all at once (as runs started
    together from the UI or a schedule); each process's output goes to a file of its own, so a
    run that fails under load says why. Returns one line per run that failed (with its output)."""
    import json
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    outputs = [logs_dir / f"run-{i}.log" for i in range(len(keys))]
    procs = []
    for key, output in zip(keys, outputs, strict=True):
        with output.open("wb") as sink:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.pipeline.run_batch_process", key,
                     json.dumps(pod_env)],
                    cwd=repo, env=env, stdout=sink, stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
    try:
        codes = [proc.wait(timeout=300) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [
        f"--- run of {key} exited {code}:\n{output.read_text(errors='replace')[-6000:]}"
        for key, code, output in zip(keys, codes, outputs, strict=True)
        if code != 0
    ]
