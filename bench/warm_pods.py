"""Warm pods against cold launches: time until a run has a ready ComfyUI, and adoption races.

`python -m bench warm_pods`; results in bench/results/warm_pods.{json,md}. Runs on the devstack
pieces (RunPod emulator with local pods, moto S3 with atomic conditional writes). The peer is a
cold launch measured in the same run: launch + wait until ready, against claim an idle pod +
wait until ready. The emulator's boot delay (BENCH_BOOT_DELAY_S, default 5 s) stands in for
RunPod's image pull and model load, which take minutes on real pods, so the ratio understates
the saving. Each timing is the median of BENCH_REPEATS (default 3).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
BOOT_DELAY_S = float(os.environ.get("BENCH_BOOT_DELAY_S", "5"))
RACERS, RACE_ROUNDS = 8, 20
IMAGE = "local/comfyui:bench"
GPU = "NVIDIA GeForce RTX 4090"


def log(message: str) -> None:
    print(f"[bench warm_pods] {message}", flush=True)


def write_lease(r2: Any, pod_id: str, run_id: str) -> None:
    from rp_pipeline.fleet.leases import LeaseKeeper

    LeaseKeeper(r2, run_id, 600).hold(pod_id)  # the lease a run writes (no renewal thread)


def main() -> int:
    from rp_devstack.runpod_emulator import RunPodEmulator
    from rp_devstack.s3 import LocalS3
    from rp_pipeline.fleet import warm_pods
    from rp_pipeline.fleet.leases import PodNeeds
    from rp_pipeline.integrations.r2.resource import R2Resource
    from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient

    with tempfile.TemporaryDirectory() as tmp:
        s3_server = LocalS3().start()
        emulator = RunPodEmulator(Path(tmp) / "runpod", boot_delay_s=BOOT_DELAY_S).start()
        try:
            settings = s3_server.create_bucket("bench-warm")
            r2 = R2Resource(
                endpoint=settings.endpoint,
                bucket=settings.bucket,
                access_key_id=settings.access_key_id,
                secret_access_key=settings.secret_access_key,
            )
            client = RunPodClient(emulator.api_key, emulator.base_url, poll_interval_s=0.1)
            spec = PodSpec(image=IMAGE, gpu_types=[GPU])
            cold, warm = [], []
            for n in range(REPEATS):
                started = time.monotonic()
                pod = client.launch(spec, run_id=f"bench-cold-{n}")
                client.wait_until_ready(pod.id, deadline_s=120)
                cold.append(time.monotonic() - started)
                write_lease(r2, pod.id, f"bench-cold-{n}")
                needs = PodNeeds(IMAGE, GPU, None)
                assert warm_pods.release_to_idle(r2, pod.id, f"bench-cold-{n}", needs, 600)
                started = time.monotonic()
                claim = warm_pods.claim_idle_pod(
                    client, r2, f"bench-warm-{n}",
                    image=IMAGE, gpu_types=[GPU], volume=None, lease_s=600,
                )  # fmt: skip
                assert claim is not None
                client.wait_until_ready(claim.pod.id, deadline_s=120)
                warm.append(time.monotonic() - started)
                client.terminate(pod.id)
                log(f"repeat {n}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s")
            races = race_rounds(client, r2, spec)
        finally:
            emulator.stop()
            s3_server.stop()
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "boot_delay_s": BOOT_DELAY_S,
        "repeats": REPEATS,
        "cold_ready_s": round(statistics.median(cold), 3),
        "warm_ready_s": round(statistics.median(warm), 3),
        "cold_over_warm": round(statistics.median(cold) / statistics.median(warm), 1),
        "race_rounds": RACE_ROUNDS,
        "racers": RACERS,
        "rounds_with_one_winner": races,
    }
    write_results(result)
    ok = races == RACE_ROUNDS and result["cold_over_warm"] > 1
    log(f"cold/warm {result['cold_over_warm']}x; one winner in {races}/{RACE_ROUNDS} races")
    return 0 if ok else 1


def race_rounds(client: Any, r2: Any, spec: Any) -> int:
    """RACERS runs claim one idle pod at once, RACE_ROUNDS times: rounds with exactly one winner."""
    from rp_pipeline.fleet import warm_pods
    from rp_pipeline.fleet.leases import PodNeeds

    pod = client.launch(spec, run_id="bench-race")
    good = 0
    try:
        for round_no in range(RACE_ROUNDS):
            write_lease(r2, pod.id, "bench-race")
            needs = PodNeeds(IMAGE, GPU, None)
            assert warm_pods.release_to_idle(r2, pod.id, "bench-race", needs, 600)
            barrier = threading.Barrier(RACERS)
            wins: list[str] = []

            def racer(n: int, round_no: int = round_no, barrier: Any = barrier) -> None:
                run_id = f"race-{round_no}-{n}"
                barrier.wait()
                claim = warm_pods.claim_idle_pod(
                    client, r2, run_id,
                    image=IMAGE, gpu_types=[GPU], volume=None, lease_s=600,
                )  # fmt: skip
                if claim is not None:
                    wins.append(run_id)  # noqa: B023 - list of this round, joined below

            threads = [threading.Thread(target=racer, args=(n,)) for n in range(RACERS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            good += len(wins) == 1
    finally:
        client.terminate(pod.id)
    return good


def write_results(result: dict[str, Any]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "warm_pods.json").write_text(json.dumps(result, indent=2) + "\n")
    md = f"""# Warm pods benchmark

{result["when"]}, {result["cpus"]} CPUs (shared), RunPod emulator (boot delay
{result["boot_delay_s"]} s) with local pods, moto S3 with atomic conditional writes.

| path to a ready ComfyUI | median s ({result["repeats"]} runs) |
| --- | --- |
| cold: launch + wait until ready | {result["cold_ready_s"]} |
| warm: claim an idle pod + wait until ready | {result["warm_ready_s"]} |

Cold / warm: {result["cold_over_warm"]}x. Real pods boot in minutes (image pull, model load),
the emulator in {result["boot_delay_s"]} s, so the real saving per adopted pod is larger.

Adoption races: {result["racers"]} runs claim one idle pod at the same moment, {result["race_rounds"]}
rounds; rounds with exactly one winner: {result["rounds_with_one_winner"]}.
"""
    (RESULTS / "warm_pods.md").write_text(md)


if __name__ == "__main__":
    raise SystemExit(main())
