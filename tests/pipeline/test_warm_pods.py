"""Warm pods: idle leases in the S3 server, adoption races, caps, reaping, cost split, `list`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.test_utils import create_run_for_test

from rp_agent.keys import lease_key
from rp_agent.r2 import R2Settings
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_devstack.stack import Devstack
from rp_pipeline.defs.teardown.sensors import pod_reaper
from rp_pipeline.fleet import live_fleet, warm_pods
from rp_pipeline.fleet.leases import Lease, PodNeeds, idle_lease, lease_bodies
from rp_pipeline.fleet.reaper import find_orphans, terminate_pods_of_run
from rp_pipeline.fleet.warm_pods import WarmPodConfigError
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import Pod, PodSpec, RunPodClient
from rp_pipeline.tools import launch as cli
from tests.pipeline.helpers import r2_now, tick

GPU_4090 = "NVIDIA GeForce RTX 4090"
GPU_A6000 = "NVIDIA RTX A6000"
IMAGE = "local/comfyui:warm"
PREFIX = "outputs"


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunPodEmulator]:
    emu = RunPodEmulator(tmp_path_factory.mktemp("warm-runpod"), boot_delay_s=0.1)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def client(emulator: RunPodEmulator) -> RunPodClient:
    return RunPodClient(emulator.api_key, emulator.base_url, poll_interval_s=0.1)


@pytest.fixture(scope="module")
def pods(client: RunPodClient) -> Iterator[list[Pod]]:
    """Two real emulated pods (launched once for the module): a 4090 and an A6000."""
    launched = [
        client.launch(PodSpec(image=IMAGE, gpu_types=[gpu]), run_id=f"run-first-{i}")
        for i, gpu in enumerate((GPU_4090, GPU_A6000))
    ]
    try:
        yield launched
    finally:
        for pod in launched:
            client.terminate(pod.id)


@pytest.fixture
def r2(r2_settings: R2Settings) -> R2Resource:
    """The fresh bucket as the pipeline's R2 resource (prefix `outputs`)."""
    return R2Resource(
        endpoint=r2_settings.endpoint,
        bucket=r2_settings.bucket,
        access_key_id=r2_settings.access_key_id,
        secret_access_key=r2_settings.secret_access_key,
        prefix=PREFIX,
    )


def write_busy_lease(r2: R2Resource, pod_id: str, run_id: str, now: float) -> None:
    """The lease a run writes while it uses a pod (what the fleet renews)."""
    body = {"pod_id": pod_id, "run_id": run_id, "renewed_at": now, "expires_at": now + 300}
    r2.put_bytes(lease_key(pod_id, PREFIX), json.dumps(body).encode(), "application/json")


def lease_body(r2: R2Resource, pod_id: str) -> dict[str, Any]:
    return json.loads(r2.get_bytes(lease_key(pod_id, PREFIX)))


def make_idle(r2: R2Resource, pod: Pod, gpu: str, now: float, idle_s: float = 600) -> None:
    write_busy_lease(r2, pod.id, "run-owner", now)
    needs = PodNeeds(IMAGE, gpu, None)
    assert warm_pods.release_to_idle(r2, pod.id, "run-owner", needs, idle_s, now=now)


def claim(client: RunPodClient, r2: R2Resource, run_id: str, **overrides: Any):
    wanted: dict[str, Any] = {
        "image": IMAGE,
        "gpu_types": [GPU_4090, GPU_A6000],
        "volume": None,
        "lease_s": 300.0,
    }
    wanted.update(overrides)
    return warm_pods.claim_idle_pod(client, r2, run_id, **wanted)


def race(count: int, call: Any) -> list[Any]:
    """`call(n)` in `count` threads released together; each thread's result (None on 412)."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(n: int) -> None:
        barrier.wait()
        results[n] = call(n)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ---------------------------------------------------------------- settings


def test_idle_seconds_default_and_valid_values() -> None:
    assert warm_pods.idle_seconds_from_env({}) == warm_pods.DEFAULT_IDLE_S == 0.0
    assert warm_pods.idle_seconds_from_env({"RP_POD_IDLE_S": " 120 "}) == 120.0
    assert warm_pods.idle_seconds_from_env({"RP_POD_IDLE_S": "0"}) == 0.0


@pytest.mark.parametrize("raw", ["-1", "ten", "nan", "inf", "1e999", "5", "14.9"])
def test_bad_idle_seconds_are_refused_in_one_line(raw: str) -> None:
    with pytest.raises(WarmPodConfigError) as err:
        warm_pods.idle_seconds_from_env({"RP_POD_IDLE_S": raw})
    message = str(err.value)
    assert "\n" not in message and "RP_POD_IDLE_S" in message and repr(raw) in message


# ---------------------------------------------------------------- the S3 stand-in's contract


def test_put_if_match_with_a_stale_etag_is_refused(r2_client: Any, r2_settings: R2Settings) -> None:
    bucket, key = r2_settings.bucket, "outputs/_rp/leases/x.json"
    first = r2_client.put_object(Bucket=bucket, Key=key, Body=b"1")["ETag"]
    r2_client.put_object(Bucket=bucket, Key=key, Body=b"2", IfMatch=first)
    with pytest.raises(ClientError) as err:
        r2_client.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch=first)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert r2_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"2"


def test_racing_conditional_puts_have_exactly_one_winner(
    r2_client: Any, r2_settings: R2Settings
) -> None:
    """R2 applies If-Match atomically; the devstack's S3 server must too, under real threads."""
    bucket, key = r2_settings.bucket, "outputs/_rp/leases/race.json"
    for round_no in range(10):
        etag = r2_client.put_object(Bucket=bucket, Key=key, Body=b"start")["ETag"]

        def writer(n: int, etag: str = etag) -> int | None:
            try:
                r2_client.put_object(Bucket=bucket, Key=key, Body=str(n).encode(), IfMatch=etag)
            except ClientError:
                return None
            return n

        winners = [n for n in race(8, writer) if n is not None]
        assert len(winners) == 1, f"round {round_no}: winners {winners}"
        assert (
            r2_client.get_object(Bucket=bucket, Key=key)["Body"].read() == str(winners[0]).encode()
        )


# ---------------------------------------------------------------- release


def test_release_rewrites_the_lease_as_idle(r2: R2Resource, pods: list[Pod]) -> None:
    pod = pods[0]
    write_busy_lease(r2, pod.id, "run-a", now=1000.0)
    needs = PodNeeds(IMAGE, GPU_4090, "vol-1")
    assert warm_pods.release_to_idle(r2, pod.id, "run-a", needs, 90, now=2000.0)
    assert lease_body(r2, pod.id) == {
        "pod_id": pod.id,
        "run_id": None,
        "state": "idle",
        "idle_since": 2000.0,
        "renewed_at": 2000.0,
        "expires_at": 2090.0,
        "needs": {"image": IMAGE, "gpu_type": GPU_4090, "volume": "vol-1"},
        "last_run_id": "run-a",
    }


def test_no_release_with_zero_idle_time_or_someone_elses_lease(
    r2: R2Resource, pods: list[Pod]
) -> None:
    pod = pods[0]
    needs = PodNeeds(IMAGE, GPU_4090, None)
    assert not warm_pods.release_to_idle(r2, pod.id, "run-a", needs, 90)  # no lease
    write_busy_lease(r2, pod.id, "run-a", now=1000.0)
    assert not warm_pods.release_to_idle(r2, pod.id, "run-a", needs, 0)
    assert not warm_pods.release_to_idle(r2, pod.id, "run-b", needs, 90)
    assert lease_body(r2, pod.id)["run_id"] == "run-a"


# ---------------------------------------------------------------- adoption


def test_a_later_run_adopts_a_fitting_idle_pod(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    now = time.time()
    make_idle(r2, pods[0], GPU_4090, now - 50)
    got = claim(client, r2, "run-next", now=now)
    assert got is not None and got.pod.id == pods[0].id
    assert got.previous_run_id == "run-owner" and got.idle_s == pytest.approx(50.0)
    lease = lease_body(r2, pods[0].id)
    assert lease["run_id"] == "run-next" and lease["state"] == "busy"
    assert lease["expires_at"] == pytest.approx(now + 300)
    # Now busy: nobody else can adopt it.
    assert claim(client, r2, "run-third", now=now) is None


@pytest.mark.parametrize(
    "wanted",
    [
        {"image": "other/image:1"},
        {"gpu_types": [GPU_A6000]},
        {"volume": "devstack-volume"},
    ],
    ids=["image", "gpu", "volume"],
)
def test_an_idle_pod_that_does_not_fit_is_left_alone(
    client: RunPodClient,
    r2: R2Resource,
    pods: list[Pod],
    wanted: dict[str, Any],
) -> None:
    now = time.time()
    make_idle(r2, pods[0], GPU_4090, now)
    assert claim(client, r2, "run-next", now=now, **wanted) is None
    assert lease_body(r2, pods[0].id)["state"] == "idle"


def test_an_idle_pod_about_to_end_is_not_adopted(pods: list[Pod]) -> None:
    """Time left to claim is the grant less the lease object's age on R2's clock: 110 s idle
    written 100 s ago leaves 10 s, under the 30 s claim margin."""
    now = time.time()
    body = idle_lease(pods[0].id, "run-owner", PodNeeds(IMAGE, GPU_4090, None), 110, now)
    fleet = live_fleet.LiveFleet([pods[0]], {pods[0].id: Lease(body, "etag", age_s=100.0)})
    assert fleet.adoptable(image=IMAGE, gpu_types=[GPU_4090], volume=None) == []
    fresh = live_fleet.LiveFleet([pods[0]], {pods[0].id: Lease(body, "etag", age_s=1.0)})
    assert [p.id for p, _ in fresh.adoptable(image=IMAGE, gpu_types=[GPU_4090], volume=None)] == [
        pods[0].id
    ]


def test_an_idle_pod_is_adopted_only_by_runs_whose_loras_it_holds(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    """A pod fetches LoRAs at its boot only: its idle lease records them, a run asking for a
    LoRA the pod lacks launches its own pod, a run asking for a subset (or none) adopts it."""
    from rp_pipeline.workflows.loras import lora_ids

    held = lora_ids(
        '[{"name":"a.safetensors","source":"file"},{"name":"b.safetensors","source":"file"}]'
    )
    other = lora_ids('[{"name":"c.safetensors","source":"file"}]')
    now = time.time()
    write_busy_lease(r2, pods[0].id, "run-owner", now)
    needs = PodNeeds(IMAGE, GPU_4090, None, held)
    assert warm_pods.release_to_idle(r2, pods[0].id, "run-owner", needs, 600, now=now)
    assert PodNeeds.from_json(lease_body(r2, pods[0].id)["needs"]) == needs

    assert claim(client, r2, "run-other", loras=other) is None
    got = claim(client, r2, "run-subset", loras=held[:1])
    assert got is not None and got.pod.id == pods[0].id and got.loras == held


def test_an_idle_pod_released_by_a_run_whose_clock_is_behind_is_adopted(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    """The releasing run's clock is 10 min behind: its `expires_at` reads as past on the
    claiming run's clock, yet the pod has its whole idle time left (its watcher judges on R2's
    clock too). Judged on one clock it is adopted instead of billing idle for nothing."""
    now = time.time()
    make_idle(r2, pods[0], GPU_4090, now - 600, idle_s=300)
    assert claim(client, r2, "run-next", now=now) is not None


def test_a_short_idle_time_is_still_adoptable(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    """RP_POD_IDLE_S=20: the claim margin is a third of the idle time, not a fixed 30 s that
    would leave the pod idle, billed and unadoptable for all of it."""
    now = time.time()
    make_idle(r2, pods[0], GPU_4090, now, idle_s=20)
    assert claim(client, r2, "run-next", now=now + 5) is not None


def test_two_runs_racing_for_one_idle_pod_exactly_one_wins(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    for round_no in range(3):
        now = time.time()
        make_idle(r2, pods[0], GPU_4090, now)
        results = race(4, lambda n, now=now: claim(client, r2, f"run-{n}", now=now))
        winners = [f"run-{n}" for n, got in enumerate(results) if got is not None]
        assert len(winners) == 1, f"round {round_no}: {winners}"
        assert lease_body(r2, pods[0].id)["run_id"] == winners[0]


# ---------------------------------------------------------------- caps, reaper, cost, list


def test_idle_pods_count_against_the_pod_and_cost_caps(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    now = time.time()
    write_busy_lease(r2, pods[0].id, "run-a", now)
    make_idle(r2, pods[1], GPU_A6000, now)
    usage = live_fleet.fleet_usage(client, r2)
    assert (usage.busy, usage.idle, usage.pods) == (1, 1, 2)
    assert usage.busy_cost_per_hr == pytest.approx(pods[0].cost_per_hr)
    assert usage.idle_cost_per_hr == pytest.approx(pods[1].cost_per_hr)
    assert usage.cost_per_hr == pytest.approx(pods[0].cost_per_hr + pods[1].cost_per_hr)


def test_reaper_keeps_warm_pods_and_ends_expired_ones_whatever_the_run(pods: list[Pod]) -> None:
    now = 10_000.0
    leases = {  # each idle for 60 s; the second written 61 s before the read (R2's clock)
        pods[0].id: {"state": "idle", "run_id": None, "renewed_at": now, "expires_at": now + 60},
        pods[1].id: {"state": "idle", "run_id": None, "renewed_at": now - 61, "expires_at": now - 1},
    }  # fmt: skip
    ages = {pods[0].id: 0.0, pods[1].id: 61.0}
    typed = {pod_id: Lease(body, "etag", ages[pod_id]) for pod_id, body in leases.items()}
    # The runs that launched both pods crashed long ago.
    orphans = find_orphans(pods, lambda _run: DagsterRunStatus.FAILURE, 4 * 3600, now, leases=typed)
    assert [(o.pod_id, o.reason) for o in orphans] == [(pods[1].id, "idle time over")]
    assert live_fleet.expired_idle_pod_ids(typed) == [pods[1].id]


def test_reaper_follows_the_lease_of_an_adopted_pod(pods: list[Pod]) -> None:
    leases = {pods[0].id: Lease({"state": "busy", "run_id": "run-live"}, "etag")}
    statuses = {"run-live": DagsterRunStatus.STARTED}

    def status(run_id: str) -> DagsterRunStatus:
        return statuses.get(run_id, DagsterRunStatus.SUCCESS)

    orphans = find_orphans(pods[:1], status, 4 * 3600, time.time(), leases=leases)
    assert orphans == []  # the launching run ended, but the adopter is still running
    assert [o.pod_id for o in find_orphans(pods[:1], status, 4 * 3600, time.time())] == [pods[0].id]


def test_adopted_idle_time_is_billed_apart_from_busy_time(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    now = time.time()
    make_idle(r2, pods[1], GPU_A6000, now - 40)
    got = claim(client, r2, "run-b", gpu_types=[GPU_A6000], now=now)
    assert got is not None
    ended = now + 80  # the run used the pod for 80 s after adopting it
    split = warm_pods.split_billed_seconds(ended - got.claimed_at + got.idle_s, got.idle_s, 0.9)
    assert (split.busy_s, split.idle_s) == (pytest.approx(80.0), pytest.approx(40.0))
    assert split.metadata() == {
        "pod_busy_s": 80.0,
        "pod_idle_s": 40.0,
        "pod_busy_cost_usd": 0.02,
        "pod_idle_cost_usd": 0.01,
    }
    assert warm_pods.split_billed_seconds(10, 25, 1.0).idle_s == 10  # never more than billed


def test_rp_launch_list_marks_idle_pods(
    emulator: RunPodEmulator,
    r2: R2Resource,
    r2_settings: R2Settings,
    pods: list[Pod],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = time.time()
    write_busy_lease(r2, pods[0].id, "run-a", now)
    make_idle(r2, pods[1], GPU_A6000, now)
    for name, value in {
        "RUNPOD_API_KEY": emulator.api_key,
        "RUNPOD_API_BASE_URL": emulator.base_url,
        "R2_ENDPOINT": r2_settings.endpoint,
        "R2_BUCKET": r2.bucket,
        "R2_ACCESS_KEY_ID": r2_settings.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2_settings.secret_access_key,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("R2_PREFIX", raising=False)
    assert cli.main(["list", "--json"]) == 0
    rows = {row["id"]: row["idle"] for row in json.loads(capsys.readouterr().out)}
    assert rows == {pods[0].id: False, pods[1].id: True}
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.endswith("[idle]") for line in lines] == [p.id == pods[1].id for p in pods]


def test_rp_launch_list_without_r2_marks_nothing(
    emulator: RunPodEmulator, pods: list[Pod], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.api_key)
    monkeypatch.setenv("RUNPOD_API_BASE_URL", emulator.base_url)
    for name in ("R2_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert warm_pods.idle_pod_ids_from_env(p.id for p in pods) == set()


def test_a_failed_runs_sensor_spares_pods_it_no_longer_holds(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    """The launching run failed after releasing its pod (or after another run adopted it): its
    failure sensor must not end a pod that is idle or someone else's now."""
    now = time.time()
    make_idle(r2, pods[0], GPU_4090, now)
    write_busy_lease(r2, pods[1].id, "run-adopter", now)
    ids = [p.id for p in pods]
    leases = lease_bodies(r2, ids)
    assert leases[pods[0].id]["state"] == "idle" and leases[pods[1].id]["run_id"] == "run-adopter"
    for pod in pods:
        assert terminate_pods_of_run(client, str(pod.run_id), leases=leases) == []
    assert [getattr(client.get(i), "desired_status", None) for i in ids] == ["RUNNING"] * 2


def test_reaper_sensor_keeps_a_warm_pod_and_ends_it_when_its_idle_time_is_over(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    """The real sensor on the devstack: the run that used both pods crashed; the pod still in its
    idle time stays, the one past it is terminated."""
    env = devstack.env
    client = RunPodClient(env["RUNPOD_API_KEY"], env["RUNPOD_API_BASE_URL"])
    r2 = r2_now()  # the pipeline's R2 (prefix `outputs`: R2_PREFIX unset)
    crashed = create_run_for_test(
        instance, job_name="generate_videos", status=DagsterRunStatus.FAILURE
    )
    spec = PodSpec(image=IMAGE, gpu_types=[GPU_4090], env={"ENABLE_R2_SYNC": "false"})
    warm, over = (client.launch(spec, crashed.run_id) for _ in range(2))
    try:
        now = time.time()
        for pod, idle_s in ((warm, 600.0), (over, 0.001)):
            body = {
                "pod_id": pod.id,
                "run_id": crashed.run_id,
                "renewed_at": now,
                "expires_at": now + 60,
            }
            r2.put_bytes(lease_key(pod.id, PREFIX), json.dumps(body).encode(), "application/json")
            needs = PodNeeds(IMAGE, GPU_4090, None)
            assert warm_pods.release_to_idle(r2, pod.id, crashed.run_id, needs, idle_s)
        time.sleep(2.1)  # lapse is judged on R2's clock, whole seconds (never early)
        result, _ = tick(pod_reaper, instance, resources)
        message = str(result.skip_message)
        assert message.startswith(f"reaped 1 pod(s): {over.id}; 1 idle (warm) pod(s) billing")
        assert f"{warm.id} (ends in " in message and over.id not in message.split(";")[1]
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert (status[warm.id], status[over.id]) == ("RUNNING", "TERMINATED")
    finally:
        for pod in (warm, over):
            client.terminate(pod.id)


def test_an_idle_pod_that_fits_nobody_is_evicted_to_make_room(
    client: RunPodClient, r2: R2Resource, pods: list[Pod]
) -> None:
    now = time.time()
    extra = client.launch(PodSpec(image=IMAGE, gpu_types=[GPU_4090]), run_id="run-extra")
    try:
        make_idle(r2, extra, GPU_4090, now, idle_s=60)  # ends first: evicted
        make_idle(r2, pods[0], GPU_4090, now, idle_s=600)
        write_busy_lease(r2, pods[1].id, "run-a", now)
        assert warm_pods.evict_idle_pod(client, r2, "run-b") == extra.id
        assert client.get(extra.id) is None
        assert lease_body(r2, extra.id)["state"] == "evicted"
        assert lease_body(r2, pods[0].id)["state"] == "idle"
        usage = live_fleet.fleet_usage(client, r2)
        assert (usage.busy, usage.idle) == (1, 1)
    finally:
        client.terminate(extra.id)


def test_needs_name_the_gpu_type_the_way_runs_ask_for_it(
    client: RunPodClient, pods: list[Pod]
) -> None:
    # GraphQL reports a pod's GPU by display name, REST v2 by type id: both map to the id.
    assert pods[1].gpu_type in ("RTX A6000", GPU_A6000)
    assert warm_pods.needs_of(client, pods[1], IMAGE, None) == PodNeeds(IMAGE, GPU_A6000, None)


def test_a_failing_op_spares_the_pod_its_run_kept_warm(
    devstack: Devstack, instance: DagsterInstance, resources: dict[str, Any]
) -> None:
    """An op that fails after one of its pods went idle ends the pods still working, not the
    idle one: its name still carries the run's id, but it may already be another run's."""
    from dagster import build_op_context, build_resources

    from rp_pipeline.defs.videos.ops import run_pods
    from rp_pipeline.fleet.state import BatchState, PodInfo

    env = devstack.env
    client = RunPodClient(env["RUNPOD_API_KEY"], env["RUNPOD_API_BASE_URL"])
    context = build_op_context(instance=instance)
    spec = PodSpec(image=IMAGE, gpu_types=[GPU_4090], env={"ENABLE_R2_SYNC": "false"})
    warm, busy = (client.launch(spec, context.run_id) for _ in range(2))
    try:
        state = BatchState(run_id=context.run_id, videos=[])
        now = time.time()
        for pod, kept in ((warm, True), (busy, False)):
            state.pods[pod.id] = PodInfo(
                pod.id, pod.name, GPU_4090, 0.0, now, kept_warm=kept,
                terminated_at=now if kept else None, terminate_confirmed=kept,
            )  # fmt: skip
        names = ("runpod", "r2", "settings", "comfyui")
        with build_resources({name: resources[name] for name in names}) as res:  # as in an op
            held = run_pods(context, state, res.runpod, res.r2, res.settings, res.comfyui)
            assert held.leases._pods == {busy.id}  # the live pod's lease renews, not the idle's
            with pytest.raises(RuntimeError, match="the op failed"), held.held():
                raise RuntimeError("the op failed")
        status = {p["id"]: p["desired_status"] for p in devstack.emulator.pods()}
        assert (status[warm.id], status[busy.id]) == ("RUNNING", "TERMINATED")
    finally:
        for pod in (warm, busy):
            client.terminate(pod.id)
