"""Paying less per video, end to end through the pipeline (real Dagster runs on the devstack).

`python -m bench pay_less`; results in bench/results/pay_less.{json,md}. Fixed stand-in step
time; the emulator's boot delay (BENCH_BOOT_DELAY_S, default 5 s) stands in for RunPod's image
pull and model load (minutes on real pods, so the warm saving is understated here).

(a) interactive: a one-video run that adopts a warm pod (RP_POD_IDLE_S > 0, the previous run
    left it idle) against the same run with a cold boot: seconds from the run's start to its
    prompt being queued on a pod (generation starts at once on an empty pod). Target: warm
    <= 2 s.
(b) spot: 20 videos on 2 interruptible pods (RUNPOD_API=graphql, RP_POD_MARKET=interruptible),
    once without and once with 2 preemptions (after the 3rd and the 10th video in R2). Targets:
    all 20 land, one object per partition in R2, one materialization each; the extra billed
    GPU seconds over the run without preemption are no more than the work lost in flight
    (per preemption: the prompt running on the pod, at most one video's generation time, plus
    the boot of a replacement pod when one was needed).
(c) per case: billed pod-seconds per video against generation seconds per video.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).parent / "results"
BOOT_DELAY_S = float(os.environ.get("BENCH_BOOT_DELAY_S", "5"))
STEP_SECONDS = "0.1"  # 20 sampler steps: ~2 s of "GPU" per video
PARAMS = {"width": 320, "height": 192, "frames": 9, "fps": 8}
SPOT_VIDEOS = 20
PREEMPT_AFTER = (3, 10)  # videos in R2 when each preemption happens


def log(message: str) -> None:
    print(f"[bench pay_less] {message}", flush=True)


class Bench:
    def __init__(self, instance: Any, resources: dict[str, Any], stack: Any, prompts: Path):
        self.instance, self.resources, self.stack, self.prompts = (
            instance,
            resources,
            stack,
            prompts,
        )
        self.batches = 0

    def keys(self, tag: str, n: int) -> list[str]:
        from dagster import materialize

        from rp_pipeline.assets.requests import video_requests
        from rp_pipeline.video_requests import load_request_file

        self.batches += 1
        path = self.prompts / f"{tag}.yaml"
        entries = [
            {
                "prompt": f"pay-less {tag} clip {i}",
                "seed": 1000 * self.batches + i,
                "params": PARAMS,
            }
            for i in range(n)
        ]
        path.write_text(yaml.safe_dump({"requests": entries}))
        assert materialize(
            [video_requests], instance=self.instance, resources=self.resources
        ).success
        return [r.key for r in load_request_file(path)]

    def run(self, keys: list[str], env: dict[str, str], **settings: Any) -> Any:
        from rp_pipeline.batch import materialize_batch

        base = self.resources["settings"]
        fields = {name: getattr(base, name) for name in type(base).model_fields}
        fields |= settings
        fields["extra_pod_env"] = {
            **base.extra_pod_env,
            "COMFY_STANDIN_STEP_SECONDS": STEP_SECONDS,
            "RP_POD_LEASE_POLL_S": "1",
        }
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            resources = {**self.resources, "settings": type(base)(**fields)}
            result = materialize_batch(self.instance, resources, keys)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        if not result.success:
            raise RuntimeError(f"run {result.run_id} failed")
        return result

    def materializations(self, run_id: str) -> list[Any]:
        from dagster import AssetKey

        records = self.instance.fetch_materializations(AssetKey("generated_video"), limit=1000)
        return [r for r in records.records if r.run_id == run_id]

    def settled(self, run_id: str) -> list[dict[str, Any]]:
        from dagster import AssetKey

        records = self.instance.fetch_observations(AssetKey("generated_video"), limit=1000)
        return [
            {k: getattr(v, "value", v) for k, v in r.asset_observation.metadata.items()}
            for r in records.records
            if r.run_id == run_id and "cost_settled" in r.asset_observation.metadata
        ]

    def generation_s(self, run_id: str) -> list[float]:
        out = []
        for r in self.materializations(run_id):
            value = r.asset_materialization.metadata.get("generation_time_s")
            if value is not None and value.value is not None:
                out.append(float(value.value))
        return out

    def start_to_queued(self, run_id: str) -> float:
        logs = self.instance.all_logs(run_id)
        start = min(e.timestamp for e in logs)
        queued = min(e.timestamp for e in logs if "queued " in (e.user_message or ""))
        return queued - start

    def emulator_billed_s(self, run_id: str) -> float:
        pods = self.stack.emulator.pods()
        return sum(p["seconds"] for p in pods if p["env"].get("DAGSTER_RUN_ID") == run_id)

    def pods_of(self, run_id: str) -> list[dict[str, Any]]:
        return [p for p in self.stack.emulator.pods() if p["env"].get("DAGSTER_RUN_ID") == run_id]

    # ------------------------------------------------------------------ (a) interactive

    def interactive(self) -> dict[str, Any]:
        cold = self.run(self.keys("cold", 1), {"RP_POD_IDLE_S": "0"}, max_live_pods=1)
        prime = self.run(self.keys("prime", 1), {"RP_POD_IDLE_S": "120"}, max_live_pods=1)
        warm = self.run(self.keys("warm", 1), {"RP_POD_IDLE_S": "0"}, max_live_pods=1)
        [warm_settled] = self.settled(warm.run_id)
        [cold_settled] = self.settled(cold.run_id)
        adopted = warm_settled.get("pod_idle_s", 0) > 0
        rows = {
            "cold": {
                "start_to_generating_s": round(self.start_to_queued(cold.run_id), 2),
                "billed_pod_s_per_video": round(cold_settled["pod_billed_s"], 2),
                "generation_s_per_video": round(self.generation_s(cold.run_id)[0], 2),
            },
            "warm": {
                "start_to_generating_s": round(self.start_to_queued(warm.run_id), 2),
                "billed_pod_s_per_video": round(warm_settled["pod_billed_s"], 2),
                "busy_pod_s": warm_settled["pod_busy_s"],
                "idle_pod_s_taken_over": warm_settled["pod_idle_s"],
                "generation_s_per_video": round(self.generation_s(warm.run_id)[0], 2),
                "adopted": adopted,
                "adopted_pod_from_prime_run": bool(self.pods_of(prime.run_id))
                and self.pods_of(prime.run_id)[0]["id"] == warm_settled.get("pod_id"),
            },
        }
        return rows

    # ------------------------------------------------------------------ (b) spot

    def spot(self, preemptions: tuple[int, ...]) -> dict[str, Any]:
        from rp_devstack.runpod_emulator import EmulatorAdmin

        admin = EmulatorAdmin(self.stack.emulator.base_url)
        r2 = _r2()
        keys = self.keys(f"spot{len(preemptions)}", SPOT_VIDEOS)
        tag = f"spot{len(preemptions)}"
        before_pods = {p["id"] for p in self.stack.emulator.pods()}
        before_objs = _videos(r2)
        taken: list[dict[str, Any]] = []
        done = threading.Event()

        def preempter() -> None:
            for after in preemptions:
                while not done.is_set() and len(_videos(r2) - before_objs) < after:
                    time.sleep(0.2)
                live = [
                    p
                    for p in self.stack.emulator.pods()
                    if p["id"] not in before_pods and p["desired_status"] == "RUNNING"
                ]
                if done.is_set() or not live:
                    return
                admin.preempt_pod(live[0]["id"])
                taken.append({"pod_id": live[0]["id"], "after_videos": after, "at": time.time()})

        thread = threading.Thread(target=preempter, daemon=True)
        thread.start()
        env = {"RUNPOD_API": "graphql", "RP_POD_MARKET": "interruptible", "RP_POD_IDLE_S": "0"}
        try:
            result = self.run(
                keys, env, max_live_pods=2, videos_per_pod=SPOT_VIDEOS // 2, max_replacement_pods=2
            )
        finally:
            done.set()
            thread.join()
        mats = self.materializations(result.run_id)
        per_partition = {k: 0 for k in keys}
        for r in mats:
            per_partition[r.partition_key] += 1
        objects = _videos(r2) - before_objs
        objects_per_partition = {
            k: sum(f"{k}-{result.run_id[:8]}_" in o for o in objects) for k in keys
        }
        generation = self.generation_s(result.run_id)
        boots = len(self.pods_of(result.run_id))
        return {
            "case": tag,
            "videos": len(keys),
            "landed": sum(1 for v in per_partition.values() if v >= 1),
            "materialized_twice": sorted(k for k, v in per_partition.items() if v > 1),
            "objects_not_one": sorted(k for k, v in objects_per_partition.items() if v != 1),
            "preempted": len(taken),
            "preempted_partitions": sum(
                1 for r in mats if r.asset_materialization.metadata.get("preempted") is not None
            ),
            "pods": boots,
            "billed_pod_s": round(self.emulator_billed_s(result.run_id), 2),
            "generation_s_sum": round(sum(generation), 2),
            "generation_s_per_video": round(statistics.median(generation), 3),
            "billed_pod_s_per_video": round(self.emulator_billed_s(result.run_id) / len(keys), 3),
            "tag": tag,
        }


def _r2() -> Any:
    from rp_pipeline.resources.r2 import R2Resource

    return R2Resource(
        endpoint=os.environ["R2_ENDPOINT"],
        bucket=os.environ["R2_BUCKET"],
        access_key_id=os.environ["R2_ACCESS_KEY_ID"],
        secret_access_key=os.environ["R2_SECRET_ACCESS_KEY"],
    )


def _videos(r2: Any) -> set[str]:
    return {k for page in r2.iter_keys(r2.prefix) for k in page.keys if k.endswith(".mp4")}


def run_all(workdir: Path) -> dict[str, Any]:
    from dagster import DagsterInstance

    from rp_devstack.stack import Devstack

    stack = Devstack(workdir / "devstack", boot_delay_s=BOOT_DELAY_S).start()
    try:
        os.environ.update(stack.env)
        os.environ["RP_ENV"] = "devstack"
        prompts = workdir / "prompts"
        prompts.mkdir()
        os.environ["RP_PROMPTS_DIR"] = str(prompts)
        home = workdir / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["DAGSTER_HOME"] = str(home)
        from rp_pipeline.definitions import resources_for

        resources = resources_for("devstack")
        with DagsterInstance.get() as instance:
            instance.event_log_storage.set_concurrency_slots("runpod_pods", 2)
            bench = Bench(instance, resources, stack, prompts)
            log("interactive: cold, then warm")
            interactive = bench.interactive()
            log(json.dumps(interactive))
            log(f"spot: {SPOT_VIDEOS} videos on 2 interruptible pods, no preemption")
            peer = bench.spot(())
            log(json.dumps(peer))
            log(f"spot: {SPOT_VIDEOS} videos, preempted after {PREEMPT_AFTER} videos")
            spot = bench.spot(PREEMPT_AFTER)
            log(json.dumps(spot))
        live = [p["id"] for p in stack.emulator.pods() if p["desired_status"] != "TERMINATED"]
        return {"interactive": interactive, "spot_peer": peer, "spot": spot, "pods_left": live}
    finally:
        stack.stop()


def write_results(data: dict[str, Any]) -> dict[str, Any]:
    inter, peer, spot = data["interactive"], data["spot_peer"], data["spot"]
    extra = spot["billed_pod_s"] - peer["billed_pod_s"]
    replacements = max(0, spot["pods"] - 2)
    lost_bound = spot["preempted"] * spot["generation_s_per_video"] + replacements * BOOT_DELAY_S
    targets = {
        "warm_run_generating_within_2_s": inter["warm"]["adopted"]
        and inter["warm"]["start_to_generating_s"] <= 2.0,
        "spot_all_20_landed": spot["landed"] == spot["videos"] and peer["landed"] == peer["videos"],
        "spot_none_twice": not spot["materialized_twice"] and not spot["objects_not_one"],
        "spot_two_preemptions_happened": spot["preempted"] == len(PREEMPT_AFTER),
        "spot_extra_gpu_s_within_work_lost_in_flight": extra <= lost_bound,
        "no_pod_left": not data["pods_left"],
    }
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "boot_delay_s": BOOT_DELAY_S,
        "stand_in_step_seconds": float(STEP_SECONDS),
        **data,
        "spot_extra_billed_s": round(extra, 2),
        "spot_work_lost_bound_s": round(lost_bound, 2),
        "targets_met": targets,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pay_less.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# Paying less per video",
        "",
        f"Devstack, emulator boot delay {BOOT_DELAY_S} s, stand-in {STEP_SECONDS} s/step (20 "
        f"steps); measured {report['when']}. `python -m bench pay_less`.",
        "",
        "## (a) interactive: one video, warm pod vs cold boot",
        "",
        "| case | run start -> generating s | billed pod-s / video | generation s / video |",
        "|---|---|---|---|",
    ]
    for name in ("cold", "warm"):
        r = inter[name]
        lines.append(
            f"| {name} | {r['start_to_generating_s']} | {r['billed_pod_s_per_video']} "
            f"| {r['generation_s_per_video']} |"
        )
    lines += [
        "",
        f"Warm: busy {inter['warm']['busy_pod_s']} s + idle taken over "
        f"{inter['warm']['idle_pod_s_taken_over']} s (the previous run's idle wait, billed to "
        "the adopter and shown apart).",
        "",
        f"## (b) spot: {SPOT_VIDEOS} videos on 2 interruptible pods",
        "",
        "| case | landed | preemptions | partitions moved | pods | billed pod-s | gen s (sum) "
        "| billed pod-s / video | generation s / video |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (peer, spot):
        lines.append(
            f"| {r['preempted']} preemption(s) | {r['landed']}/{r['videos']} | {r['preempted']} "
            f"| {r['preempted_partitions']} | {r['pods']} | {r['billed_pod_s']} "
            f"| {r['generation_s_sum']} | {r['billed_pod_s_per_video']} "
            f"| {r['generation_s_per_video']} |"
        )
    lines += [
        "",
        f"Extra billed GPU seconds with preemption: {extra:.2f} s; work lost in flight bound: "
        f"{lost_bound:.2f} s (preemptions x one video's generation + replacement boots).",
        "",
        "Targets:",
        "",
    ]
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in targets.items()]
    lines.append("")
    (RESULTS / "pay_less.md").write_text("\n".join(lines))
    return report


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="rp-bench-pay-less-") as tmp:
        data = run_all(Path(tmp))
    report = write_results(data)
    log(f"done in {time.time() - started:.0f} s -> bench/results/pay_less.json, pay_less.md")
    return 0 if all(report["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
