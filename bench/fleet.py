"""Fleet benchmark: one batch of 24 videos on 1, 2 and 4 pods (same devstack, same step time).

`python -m bench fleet`; results in bench/results/fleet.{json,md}. Per fleet size: makespan (the
run's wall time), billed pod-seconds (the RunPod emulator's bill), boots, overhead per video
(billed pod-seconds beyond generation, per video), and how long after the first pod was ready
the first video was materialized. Targets (ratios measured in the same run, so the machine's
speed cancels out):
- 4 pods take <= 0.35x the 1-pod makespan;
- billed pod-seconds <= (sum of generation seconds + k x one pod's boot-to-ready) x 1.1;
- the first video is materialized within one video's generation time beyond its own generation
  after the first pod is ready (i.e. first-materialized - first-ready <= 2 x generation time).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).parent / "results"
VIDEOS = 24
FLEETS = (1, 2, 4)
STEP_SECONDS = "0.1"  # 20 sampler steps: ~2 s of "GPU" per video, sleeping, not burning CPU
PARAMS = {"width": 320, "height": 192, "frames": 9, "fps": 8}
READY = re.compile(r"pod (\S+) ready after ([0-9.]+) s")


def log(message: str) -> None:
    print(f"[bench fleet] {message}", flush=True)


def one_batch(instance: Any, resources: dict[str, Any], stack: Any, prompts: Path, k: int):
    from dagster import AssetKey, materialize

    from rp_pipeline.defs.requests.assets import video_requests
    from rp_pipeline.integrations.replace import replace_fields
    from rp_pipeline.tools.batch import materialize_batch
    from rp_pipeline.video_requests.model import load_request_file

    path = prompts / f"fleet{k}.yaml"
    entries = [
        {"prompt": f"fleet bench k={k} clip {i}: tide pools", "seed": 100 * k + i, "params": PARAMS}
        for i in range(VIDEOS)
    ]
    path.write_text(yaml.safe_dump({"requests": entries}))
    keys = [r.key for r in load_request_file(path)]
    assert materialize([video_requests], instance=instance, resources=resources).success
    settings = resources["settings"]
    fleet_settings = replace_fields(
        settings,
        max_live_pods=k,
        videos_per_pod=max(1, VIDEOS // k),
        extra_pod_env={**settings.extra_pod_env, "COMFY_STANDIN_STEP_SECONDS": STEP_SECONDS},
    )
    # The pool limit is the instance's: make it this fleet's size.
    instance.event_log_storage.set_concurrency_slots("runpod_pods", k)
    started = time.time()
    result = materialize_batch(instance, {**resources, "settings": fleet_settings}, keys)
    makespan = time.time() - started
    if not result.success:
        raise RuntimeError(f"the {k}-pod batch failed (run {result.run_id})")
    records = [
        r
        for r in instance.fetch_materializations(AssetKey("generated_video"), limit=1000).records
        if r.run_id == result.run_id
    ]
    generation = [
        float(r.asset_materialization.metadata["generation_time_s"].value) for r in records
    ]
    ready = [
        (entry.timestamp, float(m.group(2)))
        for entry in instance.all_logs(result.run_id)
        if (m := READY.search(entry.user_message or ""))
    ]
    pods = [p for p in stack.emulator.pods() if p["env"].get("DAGSTER_RUN_ID") == result.run_id]
    billed = sum(p["seconds"] for p in pods)
    boot = statistics.mean(b for _, b in ready)
    first_ready = min(t for t, _ in ready)
    first_video = min(r.timestamp for r in records)
    one_video = statistics.median(generation)
    budget = (sum(generation) + len(pods) * boot) * 1.1
    return {
        "pods": k,
        "videos": len(records),
        "makespan_s": round(makespan, 2),
        "billed_pod_s": round(billed, 2),
        "boots": len(pods),
        "generation_s_sum": round(sum(generation), 2),
        "generation_s_per_video": round(one_video, 3),
        "boot_to_ready_s": round(boot, 2),
        "overhead_per_video_s": round((billed - sum(generation)) / len(records), 3),
        "billed_budget_s": round(budget, 2),
        "billed_within_budget": billed <= budget,
        "first_video_after_ready_s": round(first_video - first_ready, 2),
        "first_video_within_target": first_video - first_ready <= 2 * one_video,
        "billed_usd": round(sum(p["cost"] for p in pods), 6),
    }


def run_all(workdir: Path) -> list[dict[str, Any]]:
    from dagster import DagsterInstance

    from rp_devstack.stack import Devstack

    stack = Devstack(workdir / "devstack", boot_delay_s=1.0).start()
    try:
        stack.use_in_this_process(workdir / "dagster_home")
        prompts = workdir / "prompts"
        prompts.mkdir()
        os.environ["RP_PROMPTS_DIR"] = str(prompts)
        from rp_pipeline.definitions import resources_for

        resources = resources_for("devstack")
        rows = []
        with DagsterInstance.get() as instance:
            for k in FLEETS:
                log(f"{VIDEOS} videos on {k} pod(s)")
                row = one_batch(instance, resources, stack, prompts, k)
                log(json.dumps(row))
                rows.append(row)
        return rows
    finally:
        stack.stop()


def write_results(rows: list[dict[str, Any]]) -> dict[str, Any]:
    base = next(r for r in rows if r["pods"] == 1)
    for row in rows:
        row["makespan_vs_1_pod"] = round(row["makespan_s"] / base["makespan_s"], 3)
    four = next(r for r in rows if r["pods"] == 4)
    targets = {
        "4_pods_at_most_0.35x_1_pod": four["makespan_vs_1_pod"] <= 0.35,
        "billed_within_generation_plus_boots_plus_10pct": all(
            r["billed_within_budget"] for r in rows
        ),
        "first_video_within_one_generation_of_first_ready": all(
            r["first_video_within_target"] for r in rows
        ),
    }
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "videos": VIDEOS,
        "stand_in_step_seconds": float(STEP_SECONDS),
        "rows": rows,
        "targets_met": targets,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Fleet benchmark",
        "",
        f"{VIDEOS} small videos per batch on the devstack (stand-in {STEP_SECONDS} s/step, 20 "
        f"steps), one run per fleet size; measured {report['when']}. `python -m bench fleet`.",
        "",
        "| pods | makespan s | vs 1 pod | billed pod-s | budget s | boots | gen s (sum) "
        "| boot->ready s | overhead s/video | first video after ready s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pods']} | {r['makespan_s']} | {r['makespan_vs_1_pod']} | {r['billed_pod_s']} "
            f"| {r['billed_budget_s']} | {r['boots']} | {r['generation_s_sum']} "
            f"| {r['boot_to_ready_s']} | {r['overhead_per_video_s']} "
            f"| {r['first_video_after_ready_s']} |"
        )
    lines += ["", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in targets.items()]
    lines += [
        "",
        "budget = (sum of generation seconds + pods x mean boot-to-ready) x 1.1. Billed pod-"
        "seconds are the emulator's (create to terminate). The first-video target allows the "
        "video's own generation plus one more generation time for queueing, upload and probing.",
        "",
    ]
    (RESULTS / "fleet.md").write_text("\n".join(lines))
    return report


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="rp-bench-fleet-") as tmp:
        rows = run_all(Path(tmp))
    report = write_results(rows)
    log(f"done in {time.time() - started:.0f} s -> bench/results/fleet.json, fleet.md")
    return 0 if all(report["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
