"""Paying less per video, end to end through the pipeline (real Dagster runs on the devstack).

`python -m bench pay_less`; results in bench/results/pay_less.{json,md}. Fixed stand-in step
time; the emulator's boot delay (BENCH_BOOT_DELAY_S, default 5 s) stands in for RunPod's image
pull and model load (minutes on real pods, so the warm saving is understated here).

(a) interactive: a one-video run that adopts a warm pod (RP_POD_IDLE_S > 0, the previous run
    left it idle) against the same run with a cold boot: seconds from the run's start to its
    prompt being queued on a pod (generation starts at once on an empty pod). Target: warm
    <= 2 s.
(b) spot: 20 videos on 2 interruptible pods (RUNPOD_API=graphql, RP_POD_MARKET=interruptible),
    once without and once with 2 preemptions (1 s after the 3rd and the 10th video is in R2,
    about halfway through the pod's next video). Targets:
    all 20 land, one object per partition in R2, one materialization each; the extra GPU
    seconds over the run without preemption are no more than the work lost in flight. GPU
    seconds are counted from each pod's GPU meter (the stand-in writes a line per sampler step
    as it ends, so a killed pod's partial prompt counts too); work lost in flight is the steps
    a preempted pod ran for prompts whose video it never got into R2 (by its agent's receipts).
    A video generated twice would show as extra GPU seconds that no loss explains. Extra
    billed pod-seconds are reported beside, split into the replacement pod's boot (when both
    pods are taken back, a new one must boot) and the rest; and how long after each preemption
    the run noticed it (one status poll at most).
(c) per case: billed pod-seconds per video against generation seconds per video.
(d) reaper: two pods left idle for REAPER_IDLE_S with their own lease watcher off (as if it had
    died), so only the reaper can end them; the reaper sensor is ticked every
    REAPER_INTERVAL_S, as the daemon ticks it (every 60 s in a deployment; shorter here to keep
    the bench short, the bound scales with it). Target: each idle pod is ended within its idle
    time plus one reaper interval.
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
# ... and this long after, so the pod is about halfway through its next video (2 s each): the
# preemption then costs real work in flight, not a prompt that has just begun.
PREEMPT_DELAY_S = 1.0
REAPER_IDLE_S = 15.0  # the shortest idle time RP_POD_IDLE_S allows
REAPER_INTERVAL_S = 5.0


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

        from rp_pipeline.defs.requests.assets import video_requests
        from rp_pipeline.video_requests.model import load_request_file

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
        from rp_pipeline.integrations.replace import replace_fields
        from rp_pipeline.tools.batch import materialize_batch

        base = self.resources["settings"]
        pod_env = {
            **base.extra_pod_env,
            "COMFY_STANDIN_STEP_SECONDS": STEP_SECONDS,
            "RP_POD_LEASE_POLL_S": "1",
            **settings.pop("extra_pod_env", {}),
        }
        run_settings = replace_fields(base, **settings, extra_pod_env=pod_env)
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            resources = {**self.resources, "settings": run_settings}
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
        from rp_pipeline.tools.video import r2_from_env

        admin = EmulatorAdmin(self.stack.emulator.base_url)
        r2 = r2_from_env()
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
                time.sleep(PREEMPT_DELAY_S)
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
        work = self.gpu_work(result.run_id, {t["pod_id"] for t in taken}, r2)
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
            **work,
            "noticed_after_s": [
                round(self.noticed_at(result.run_id, t["pod_id"]) - t["at"], 2) for t in taken
            ],
            "tag": tag,
        }

    def gpu_work(self, run_id: str, preempted: set[str], r2: Any) -> dict[str, Any]:
        """Sampler steps the run's pods ran, from their GPU meters: in all, and those lost in
        flight (run on a preempted pod for a prompt whose video that pod never got into R2)."""
        from rp_devstack.local_pods import gpu_meter_path
        from rp_pipeline.fleet.renders import receipt_for_prefix

        total = lost = 0
        for pod in self.pods_of(run_id):
            output = self.stack.emulator.state_dir / "pods" / pod["id"] / "workspace"
            meter = gpu_meter_path(output / "ComfyUI" / "output")
            steps: dict[str, int] = {}
            for line in meter.read_text().splitlines() if meter.exists() else []:
                prefix = json.loads(line)["prefixes"][0]
                steps[prefix] = steps.get(prefix, 0) + 1
            total += sum(steps.values())
            if pod["id"] in preempted:
                lost += sum(
                    n for prefix, n in steps.items()
                    if receipt_for_prefix(r2, pod["id"], prefix) is None
                )  # fmt: skip
        step_s = float(STEP_SECONDS)
        return {
            "gpu_steps": total,
            "gpu_s": round(total * step_s, 2),
            "lost_in_flight_steps": lost,
            "lost_in_flight_gpu_s": round(lost * step_s, 2),
        }

    def noticed_at(self, run_id: str, pod_id: str) -> float:
        """When the run logged that the pod's prompts go back to the queue."""
        return min(
            e.timestamp
            for e in self.instance.all_logs(run_id)
            if pod_id in (e.user_message or "") and "go back to the queue" in e.user_message
        )

    # ------------------------------------------------------------------ (d) reaper

    def reaper(self) -> dict[str, Any]:
        from dagster import build_sensor_context

        from rp_pipeline.defs.teardown.sensors import pod_reaper
        from rp_pipeline.fleet.leases import read_lease
        from rp_pipeline.tools.video import r2_from_env

        env = {"RP_POD_IDLE_S": str(REAPER_IDLE_S)}
        result = self.run(
            self.keys("reaper", 2), env, max_live_pods=2, videos_per_pod=1,
            extra_pod_env={"RP_POD_LEASE_S": "0"},
        )  # fmt: skip
        pods = [p["id"] for p in self.pods_of(result.run_id)]
        r2 = r2_from_env()
        expires = {}
        for pod_id in pods:
            lease = read_lease(r2, pod_id)
            assert lease is not None and lease.idle, f"pod {pod_id} was not left idle"
            expires[pod_id] = lease.expires_at
        ticks = 0
        give_up = time.time() + 10 * (REAPER_IDLE_S + REAPER_INTERVAL_S)
        while time.time() < give_up and any(self.status(p) != "TERMINATED" for p in pods):
            time.sleep(REAPER_INTERVAL_S)
            with build_sensor_context(instance=self.instance, resources=self.resources) as ctx:
                pod_reaper(ctx)
            ticks += 1
        ended = {p["id"]: p["terminated_at"] for p in self.stack.emulator.pods() if p["id"] in pods}
        late = {
            pod_id: round(ended[pod_id] - expires[pod_id], 2) if ended[pod_id] else None
            for pod_id in pods
        }
        return {"idle_s": REAPER_IDLE_S, "interval_s": REAPER_INTERVAL_S, "ticks": ticks,
                "ended_after_idle_time_s": late}  # fmt: skip

    def status(self, pod_id: str) -> str:
        return str(
            next(p for p in self.stack.emulator.pods() if p["id"] == pod_id)["desired_status"]
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
            log(
                f"reaper: 2 idle pods without their own watcher, ticked every {REAPER_INTERVAL_S} s"
            )
            reaper = bench.reaper()
            log(json.dumps(reaper))
        live = [p["id"] for p in stack.emulator.pods() if p["desired_status"] != "TERMINATED"]
        return {
            "interactive": interactive,
            "spot_peer": peer,
            "spot": spot,
            "reaper": reaper,
            "pods_left": live,
            "pod_status_poll_s": resources["settings"].pod_status_poll_s,
        }
    finally:
        stack.stop()


def write_results(data: dict[str, Any]) -> dict[str, Any]:
    inter, peer, spot = data["interactive"], data["spot_peer"], data["spot"]
    poll_s = data["pod_status_poll_s"]
    extra_gpu = spot["gpu_s"] - peer["gpu_s"]
    lost = spot["lost_in_flight_gpu_s"]
    extra_billed = spot["billed_pod_s"] - peer["billed_pod_s"]
    replacements = max(0, spot["pods"] - 2)
    targets = {
        "warm_run_generating_within_2_s": inter["warm"]["adopted"]
        and inter["warm"]["start_to_generating_s"] <= 2.0,
        "spot_all_20_landed": spot["landed"] == spot["videos"] and peer["landed"] == peer["videos"],
        "spot_none_twice": not spot["materialized_twice"] and not spot["objects_not_one"],
        "spot_two_preemptions_happened": spot["preempted"] == len(PREEMPT_AFTER),
        "spot_extra_gpu_s_within_work_lost_in_flight": extra_gpu <= lost + 1e-9,
        "spot_preemption_noticed_within_one_poll": all(
            s <= poll_s for s in spot["noticed_after_s"]
        ),
        "reaper_ends_idle_pods_within_idle_time_plus_one_interval": all(
            late is not None and late <= data["reaper"]["interval_s"]
            for late in data["reaper"]["ended_after_idle_time_s"].values()
        ),
        "no_pod_left": not data["pods_left"],
    }
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "boot_delay_s": BOOT_DELAY_S,
        "stand_in_step_seconds": float(STEP_SECONDS),
        **data,
        "spot_extra_gpu_s": round(extra_gpu, 2),
        "spot_lost_in_flight_gpu_s": round(lost, 2),
        "spot_extra_billed_s": round(extra_billed, 2),
        "spot_replacement_pods": replacements,
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
        "| case | landed | partitions moved | pods | GPU s (meter) | lost in flight GPU s "
        "| billed pod-s | billed pod-s / video | generation s / video |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (peer, spot):
        lines.append(
            f"| {r['preempted']} preemption(s) | {r['landed']}/{r['videos']} "
            f"| {r['preempted_partitions']} | {r['pods']} | {r['gpu_s']} "
            f"| {r['lost_in_flight_gpu_s']} | {r['billed_pod_s']} "
            f"| {r['billed_pod_s_per_video']} | {r['generation_s_per_video']} |"
        )
    lines += [
        "",
        f"Extra GPU seconds with preemption: {extra_gpu:.2f} s, against {lost:.2f} s of work lost "
        "in flight (steps a preempted pod ran for prompts whose video it never got into R2).",
        "",
        f"Extra billed pod-seconds: {extra_billed:.2f} s. {replacements} replacement pod(s) "
        f"booted (about {replacements * BOOT_DELAY_S:.0f} s of boot at the emulator's "
        f"{BOOT_DELAY_S:.0f} s): the second preemption took the last pod of the run, so a new "
        "one had to boot; with one pod left the fleet goes on without a replacement.",
        "",
        "Preemptions noticed after "
        + ", ".join(f"{s:.2f} s" for s in spot["noticed_after_s"])
        + f" (status poll every {poll_s:.0f} s).",
        "",
        "## (d) the reaper ends idle pods on its own",
        "",
        f"{len(data['reaper']['ended_after_idle_time_s'])} pods idle for {REAPER_IDLE_S:.0f} s "
        "with their own lease watcher off; reaper ticked every "
        f"{REAPER_INTERVAL_S:.0f} s ({data['reaper']['ticks']} ticks). Ended this long after "
        "their idle time was over: "
        + ", ".join(f"{v} s" for v in data["reaper"]["ended_after_idle_time_s"].values())
        + ".",
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
