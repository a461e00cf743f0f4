"""Faults from outside that once broke paid GPU time, a healthy pod, the next run or the process
itself, each with its acceptance measured (one row each in bench/results/chaos.md).

Lease and deadline numbers are scaled down where the behaviour is the same (a case says so in
its name): a 10 s lease lapses by the same rule as a 300 s one, only sooner.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from dagster import AssetKey, DagsterRunStatus

from rp_agent.keys import lease_key, pod_of
from rp_devstack.http_faults import HttpFaultProxy
from rp_pipeline.definitions import resources_for
from rp_pipeline.defs.teardown.sensors import pod_reaper
from rp_pipeline.fleet.slots import POD_POOL
from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
from tests.chaos.harness import World
from tests.chaos.test_chaos import accept, record, run_case
from tests.pipeline.helpers import (
    latest_by_partition,
    run_messages,
    settled_by_partition,
    tick,
    with_settings,
)
from tests.pipeline.test_prompts_files_safety import alias_bomb

FAST_STEPS = "0.02"
SKEW_ENV = "RP_AGENT_CLOCK_SKEW_S"


def pod_env(world: World, **extra: str) -> dict[str, str]:
    return {**world.resources["settings"].extra_pod_env, **extra}


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.2) -> Any:
    give_up = time.monotonic() + timeout_s
    while time.monotonic() < give_up:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return None


# ------------------------------------------------------------------------- one clock


def clock_figures(world: World, keys: list[str]) -> list[dict[str, float]]:
    """Per video (in request order): every duration in its metadata (materialization and settled
    observation), and its cost shares as seconds of its pod's price."""
    made, settled = latest_by_partition(world.instance), settled_by_partition(world.instance)
    figures = []
    for key in keys:
        row: dict[str, float] = {}
        for source, metadata in (("", made.get(key, {})), ("settled ", settled.get(key, {}))):
            for name, value in metadata.items():
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if number and (name.endswith("_s") or name == "pod_seconds"):
                    row[source + name] = float(value)
            price = float(made.get(key, {}).get("cost_per_hr") or 0.0)
            if price and "cost_usd" in metadata:
                row[source + "cost share (s of pod time)"] = metadata["cost_usd"] / price * 3600
        figures.append(row)
    return figures


_UNSKEWED: dict[str, list[dict[str, float]]] = {}


def unskewed_figures(world: World) -> list[dict[str, float]]:
    """The same 3-video run with the pod's clock right (once per session)."""
    if "figures" not in _UNSKEWED:
        # Prompts of their own: a partition already made would not be generated again. The
        # second run is the baseline: the first of a session boots its pod cold (imports).
        resources = with_settings(
            world.resources, extra_pod_env=pod_env(world, RP_POD_LEASE_POLL_S="1")
        )
        for attempt in ("warm-up", "baseline"):
            keys = world.write_requests(
                [f"a lake {attempt}", f"a forest {attempt}", f"a desert {attempt}"]
            )
            assert world.register().success
            assert world.run_in_process(keys, with_settings(resources, max_live_pods=1)).success
        _UNSKEWED["figures"] = clock_figures(world, keys)
    return _UNSKEWED["figures"]


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("skew_s", "watcher"),
    [(600.0, True), (-600.0, True), (600.0, False), (-600.0, False)],
    ids=["ahead-watcher-on", "behind-watcher-on", "ahead-watcher-off", "behind-watcher-off"],
)
def test_pod_clock_10_min_off(
    request: pytest.FixtureRequest, world: World, skew_s: float, watcher: bool
) -> None:
    baseline = unskewed_figures(world)
    keys = world.write_requests(["a lake at dawn", "a pine forest", "a red desert"])
    assert world.register().success
    env = pod_env(world, **{SKEW_ENV: f"{skew_s:g}"})
    # The watcher reads the lease every second: it judges it many times during the run.
    env["RP_POD_LEASE_POLL_S"] = "1"
    if not watcher:
        env["RP_POD_LEASE_S"] = "0"
    resources = with_settings(world.resources, max_live_pods=1, pod_lease_s=60.0, extra_pod_env=env)
    way = "ahead" if skew_s > 0 else "behind"
    name = f"pod clock 10 min {way}, lease watcher {'on (lease 60 s)' if watcher else 'off'}"
    result = run_case(request, world, name, keys, resources)
    skewed = clock_figures(world, keys)
    offs: list[tuple[float, str]] = []
    missing = []
    for index, (want, got) in enumerate(zip(baseline, skewed, strict=True)):
        missing += [f"video {index + 1}: {n}" for n in sorted(set(want) ^ set(got))]
        offs += [(abs(got[f] - want[f]), f"video {index + 1} {f}") for f in set(want) & set(got)]
    offs.sort(reverse=True)
    worst, where = offs[0] if offs else (0.0, "-")
    # The pod's boot (create -> ComfyUI answering, run clock) varies from run to run with the
    # machine's load; the figures that include it may differ by that much more.
    boot_noise = abs(skewed[0].get("boot_s", 0.0) - baseline[0].get("boot_s", 0.0))
    result.notes.append(
        f"{len(offs)} figures compared; largest differences: "
        + ", ".join(f"{name} {off:.2f} s" for off, name in offs[:3])
        + "; pod_billed_s unskewed "
        + f"{baseline[0].get('settled pod_billed_s')} vs {skewed[0].get('settled pod_billed_s')}"
        + f"; boot_s {baseline[0].get('boot_s')} vs {skewed[0].get('boot_s')}"
    )
    result.acceptance = (
        f"3-video run succeeds; every duration and cost share within 1 s of the unskewed run "
        f"(+ {boot_noise:.2f} s boot variation): worst {worst:.2f} s ({where})"
    )
    if missing:  # e.g. a boot phase the run read before the pod wrote it: no clock in it
        result.notes.append(f"figures in one run only: {missing}")
    record(request, result)
    assert worst <= 1.0 + boot_noise, result.acceptance
    accept(result, materialized=3)
    [run] = world.instance.get_runs(limit=1)
    assert len([p for p in world.case_pods() if p["env"].get("DAGSTER_RUN_ID") == run.run_id]) == 1
    if watcher:  # the skew was real: the pod's watcher saw its clock against R2's
        said = [m for m in run_messages(world.instance, run.run_id) if "this pod's clock is" in m]
        result.notes.append(said[0].split("] ", 1)[-1][:90] if said else "no skew line seen")
        record(request, result)


# ------------------------------------------------------------------------- the pod's agent


def kill_process_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(os.getpgid(pid), signal.SIGKILL)


class OutputTimes:
    """When each output file on a pod was last written (generation end), sampled while the
    pod lives (its folder goes with it)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.mtimes: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> OutputTimes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            for pod in self.world.case_pods():
                local = self.world.emulator.local_pod(pod["id"])
                if local is None or not local.output_dir.exists():
                    continue
                for path in local.output_dir.rglob("*.mp4"):
                    try:
                        self.mtimes[path.name] = path.stat().st_mtime
                    except OSError:
                        continue


@pytest.mark.chaos
def test_agent_killed_for_good_after_the_first_video(
    request: pytest.FixtureRequest, world: World
) -> None:
    keys = world.write_requests(["a lake", "a forest", "a desert"])
    assert world.register().success
    killed: list[str] = []

    def kill_agent(object_key: str) -> None:
        pod_id = pod_of(object_key, world.r2().prefix)
        local = world.emulator.local_pod(pod_id)
        if local is not None and "agent" in local.processes:
            kill_process_group(local.processes["agent"].pid)  # its supervisor too: no restart
            killed.append(pod_id)

    world.when_first_video(kill_agent, keys)
    # The devstack's own receipt deadline (45 s): the agent's heartbeat, not the deadline,
    # tells the run the agent is gone.
    deadline_s = world.resources["settings"].r2_object_deadline_s
    resources = with_settings(
        world.resources,
        max_live_pods=1,
        extra_pod_env=pod_env(world, COMFY_STANDIN_STEP_SECONDS="0.2"),
    )
    with OutputTimes(world) as outputs:
        result = run_case(
            request, world, f"agent killed for good after video 1 (receipt deadline {deadline_s:g} s)",
            keys, resources,
        )  # fmt: skip
    made = latest_by_partition(world.instance)
    records = world.instance.fetch_materializations(AssetKey("generated_video"), limit=100).records
    landed = {r.partition_key: r.timestamp for r in records if r.partition_key in keys}
    lags, sources = [], []
    for key in keys[1:]:
        md = made.get(key, {})
        sources.append(str(md.get("r2_source")))
        ended = outputs.mtimes.get(str(md.get("r2_key", "")).rsplit("/", 1)[-1])
        if ended is not None and key in landed:
            lags.append(round(landed[key] - ended, 1))
    [run] = world.instance.get_runs(limit=1)
    took_over = [m for m in run_messages(world.instance, run.run_id) if "uploads this pod's" in m]
    result.acceptance = (
        f"videos 2-3 materialized within 10 s of their generation's end: {lags} s; "
        f"sources {sources}; run log says the pipeline took over: {len(took_over)} line(s)"
    )
    result.notes.append(
        f"the receipt deadline is {deadline_s:g} s (the devstack's): the run notices the dead "
        "agent by its heartbeat going stale (6 s on R2's clock), not by the deadline"
    )
    record(request, result)
    assert killed, "the agent was never killed (no video reached R2)"
    assert len(lags) == 2 and max(lags) <= 10.0, result.acceptance
    assert sources == ["pipeline_fallback"] * 2, sources
    assert len(took_over) == 1, took_over
    accept(result, materialized=3, pods=1)


@pytest.mark.chaos
def test_agent_restarted_by_its_supervisor_shows_in_metadata(
    request: pytest.FixtureRequest, world: World
) -> None:
    keys = world.write_requests(["a lake", "a forest", "a desert"])
    assert world.register().success

    def kill_sync_only(object_key: str) -> None:
        import psutil

        local = world.emulator.local_pod(pod_of(object_key, world.r2().prefix))
        if local is None:
            return
        for proc in psutil.Process(local.processes["agent"].pid).children(recursive=True):
            if "sync" in proc.cmdline() and "supervise" not in proc.cmdline():
                proc.kill()  # the supervisor starts it again after 1 s

    world.when_first_video(kill_sync_only, keys)
    resources = with_settings(
        world.resources,
        max_live_pods=1,
        extra_pod_env=pod_env(world, COMFY_STANDIN_STEP_SECONDS="0.25"),
    )
    result = run_case(
        request, world, "agent killed once, restarted by its supervisor", keys, resources
    )
    made = latest_by_partition(world.instance)
    restarts = [made.get(k, {}).get("agent_restarts") for k in keys]
    [run] = world.instance.get_runs(limit=1)
    said = [m for m in run_messages(world.instance, run.run_id) if "its agent was restarted" in m]
    result.acceptance = f"agent_restarts per video {restarts}; run log lines {len(said)}"
    record(request, result)
    assert restarts[-1] == 1 and said, result.acceptance
    accept(result, materialized=3, pods=1)


@pytest.fixture
def pods_r2_proxy(world: World) -> Iterator[HttpFaultProxy]:
    assert world.devstack.s3 is not None
    proxy = HttpFaultProxy("127.0.0.1", world.devstack.s3.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.chaos
def test_r2_answers_500_on_the_reserved_prefix_while_the_pod_boots(
    request: pytest.FixtureRequest, world: World, pods_r2_proxy: HttpFaultProxy
) -> None:
    keys = world.write_requests(["a meadow", "a glacier"])
    assert world.register().success
    pods_r2_proxy.fail("/_rp/", status=500)  # the pod's receipts, logs, lease: all 500
    world.when_first_pod(lambda _pod: threading.Timer(8.0, pods_r2_proxy.heal).start())
    resources = with_settings(
        world.resources,
        max_live_pods=1,
        extra_pod_env=pod_env(world, R2_ENDPOINT=pods_r2_proxy.url),
    )
    result = run_case(request, world, "R2 500s on _rp/ for the pod's first 8 s", keys, resources)
    made = latest_by_partition(world.instance)
    sources = [made.get(k, {}).get("r2_source") for k in keys]
    latency = [made.get(k, {}).get("upload_latency_s") for k in keys]
    restarts = [made.get(k, {}).get("agent_restarts") for k in keys]
    failed = sum(pods_r2_proxy.failed.values())
    result.acceptance = (
        f"the agent uploads every video: sources {sources}, upload latency {latency} s, "
        f"agent restarts {restarts}; {failed} request(s) on _rp/ answered 500"
    )
    record(request, result)
    assert failed > 0, "the fault never hit"
    assert sources == ["agent"] * 2 and None not in latency, result.acceptance
    accept(result, materialized=2, pods=1)


# ------------------------------------------------------------------------- slots and runs


@pytest.mark.chaos
def test_runpod_key_revoked_mid_run_then_restored_with_one_pod_slot(
    request: pytest.FixtureRequest, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_MAX_PODS", "1")
    world.resources = resources_for("devstack")
    first = world.write_requests(["a fox", "an owl", "a hare"])
    [second] = world.write_requests(["a heron"])
    assert world.register().success
    world.when_first_video(lambda _key: world.emulator.revoke_api_key(True), first)
    resources = with_settings(
        world.resources,
        pod_lease_s=20.0,
        extra_pod_env=pod_env(world, COMFY_STANDIN_STEP_SECONDS="0.25"),
    )
    started, started_wall = time.monotonic(), time.time()
    world.run_in_process(first, resources)
    world.emulator.revoke_api_key(False)
    old = world.case_pods()
    world.run_in_process([second])
    new = [p for p in world.case_pods() if p["id"] not in {o["id"] for o in old}]
    result = world.measure(
        "RunPod key revoked mid-run, restored, RP_MAX_PODS=1 (lease 20 s)",
        [*first, second],
        started,
    )
    old_ids = {p["id"] for p in old}
    ends = [p["terminated_at"] for p in world.case_pods() if p["id"] in old_ids]
    old_end = max(ends) if ends and None not in ends else None
    got_pod_s = round(new[0]["created_at"] - old_end, 1) if new and old_end else None
    promises = [e for e in result.errors if "keeps trying" in e or "will retry" in e]
    result.notes.append(
        "pods: "
        + ", ".join(
            f"{p['id']} run {p['env'].get('DAGSTER_RUN_ID', '')[:8]} "
            f"{p['created_at'] - started_wall:.1f}..{(p['terminated_at'] or 0) - started_wall:.1f} s"
            for p in world.case_pods()
        )
    )
    result.acceptance = (
        f"the next run gets its pod once the old one is gone: {got_pod_s} s after it; "
        f"errors promising a retry: {len(promises)}"
    )
    record(request, result)
    assert second in world.materialized([second]), result.acceptance
    assert got_pod_s is not None and got_pod_s >= 0, result.acceptance
    assert not promises, promises
    accept(result, pods=2, must_fail=True)


def kill_run_once_leased(
    world: World, key: str, lease_s: float, extra_pod: dict[str, str]
) -> tuple[str, float]:
    """Start a run of `key` in its own process (lease `lease_s`, the pod's watcher polling each
    second) and SIGKILL it once its pod holds a lease: (pod id, when it was killed)."""
    r2 = world.r2()
    env = pod_env(world, RP_POD_LEASE_POLL_S="1", COMFY_STANDIN_STEP_SECONDS="0.5", **extra_pod)
    with world.run_process(key, {"RP_POD_LEASE_S": f"{lease_s:g}"}, env) as proc:

        def leased() -> str | None:
            for pod in world.case_pods():
                if r2.head(lease_key(pod["id"], r2.prefix)) is not None:
                    return str(pod["id"])
            return None

        pod_id = wait_until(leased, 120)
        assert pod_id, "the run never leased a pod"
        time.sleep(1.0)  # well into the run: ComfyUI is busy with the prompt
        proc.kill()
        return pod_id, time.time()


@pytest.mark.chaos
def test_run_killed_and_no_reaper_tick_before_its_pod_ends_itself(
    request: pytest.FixtureRequest, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease_s = 10.0
    monkeypatch.setenv("RP_POD_LEASE_S", f"{lease_s:g}")
    world.resources = resources_for("devstack")  # the daemon's reaper knows the same lease
    [key] = world.write_requests(["a storm at sea"])
    assert world.register().success
    started = time.monotonic()
    pod_id, _killed_at = kill_run_once_leased(world, key, lease_s, {})
    gone = wait_until(
        lambda: all(p["desired_status"] == "TERMINATED" for p in world.case_pods()), 60
    )
    [run] = world.instance.get_runs(limit=1)
    before = world.instance.get_run_by_id(run.run_id).status
    # The daemon's next tick comes later (no tick saw the pod alive): 2 leases after the run's
    # last event it judges the run dead.
    time.sleep(2 * lease_s + 1)
    tick(pod_reaper, world.instance, world.resources)
    after = world.instance.get_run_by_id(run.run_id)
    holders = {
        s.run_id
        for s in world.instance.event_log_storage.get_concurrency_info(POD_POOL).claimed_slots
    }
    result = world.measure(
        f"run killed, its pod ends itself first (lease {lease_s:g} s)", [key], started, 5.0
    )
    result.acceptance = (
        f"pod {pod_id} ended itself: {bool(gone)}; run {before.value} -> "
        f"{after.status.value if after else '?'} at the next reaper tick; slot held after: "
        f"{run.run_id in holders}"
    )
    record(request, result)
    assert gone, "the pod's watcher never ended it"
    assert after is not None and after.status == DagsterRunStatus.FAILURE, result.acceptance
    assert run.run_id not in holders, result.acceptance
    accept(result)


@pytest.mark.chaos
def test_pod_clock_10_min_behind_and_run_killed(
    request: pytest.FixtureRequest, world: World
) -> None:
    lease_s = 10.0
    [key] = world.write_requests(["a storm in the hills"])
    assert world.register().success
    started = time.monotonic()
    pod_id, killed_at = kill_run_once_leased(world, key, lease_s, {SKEW_ENV: "-600"})
    ended = wait_until(
        lambda: next(
            (
                p["terminated_at"]
                for p in world.case_pods()
                if p["id"] == pod_id and p["terminated_at"]
            ),
            None,
        ),
        lease_s + 60,
    )
    result = world.measure(
        f"pod clock 10 min behind, run killed (lease {lease_s:g} s)", [key], started, 5.0
    )
    outlived = round(ended - killed_at, 1) if ended else None
    result.acceptance = f"the pod ends within lease + 5 s of the run dying: after {outlived} s"
    record(request, result)
    assert outlived is not None and outlived <= lease_s + 5.0, result.acceptance
    accept(result)


@pytest.mark.chaos
def test_idle_time_of_20_s_is_adoptable(
    request: pytest.FixtureRequest, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_POD_IDLE_S", "20")
    world.resources = resources_for("devstack")
    [first] = world.write_requests(["a quiet harbour"])
    [second] = world.write_requests(["a busy harbour"])
    assert world.register().success
    started = time.monotonic()
    assert world.run_in_process([first]).success
    assert world.run_in_process([second]).success
    made = latest_by_partition(world.instance)
    result = world.measure("RP_POD_IDLE_S=20", [first, second], started, 35.0)
    same = made[first]["pod_id"] == made[second]["pod_id"]
    result.acceptance = f"the next run adopts the idle pod: {same} ({result.pods} pod(s) in all)"
    record(request, result)
    assert same, result.acceptance
    accept(result, materialized=2, pods=1)


# ------------------------------------------------------------------------- strangers and files


def test_yaml_alias_bomb_beside_a_good_file(
    request: pytest.FixtureRequest, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    (world.prompts / "bomb.yaml").write_text(alias_bomb())
    [good] = world.write_requests(["a calm sea"])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        outcome = world.register()
    took = time.monotonic() - started
    result = world.measure("YAML alias bomb (9 x 9) beside a good file", [], started, 0.0)
    result.requested = 1
    lines = sorted({r.getMessage() for r in caplog.records if "bomb.yaml" in r.getMessage()})
    result.errors, result.error_classes = lines, ["warning"] * len(lines)
    registered = good in world.instance.get_dynamic_partitions("video_requests")
    result.acceptance = (
        f"refused in {len(lines)} line(s) within {took:.1f} s; good file's request registered: "
        f"{registered}"
    )
    record(request, result)
    assert outcome.success and registered, result.acceptance
    assert len(lines) == 1 and took < 5.0, result.acceptance
    accept(result, pods=0)


class Stranger:
    """A connection without the token that sends its headers a byte at a time, or nothing."""

    def __init__(self, port: int, slow: bool) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.slow = slow
        self.sent = 0
        self.closed_at: float | None = None

    def poke(self, now: float) -> None:
        if self.closed_at is not None:
            return
        try:
            if self.slow:
                self.sock.send(
                    b"GET /system_stats HTTP/1.1\r\nHost: x\r\nX-Slow: "[self.sent :][:1] or b"a"
                )
                self.sent += 1
            if self.sock.recv(1024) == b"":
                self.closed_at = now
        except BlockingIOError:
            return
        except OSError:
            self.closed_at = now


@pytest.mark.chaos
def test_fifty_strangers_hold_a_pods_public_port(
    request: pytest.FixtureRequest, world: World
) -> None:
    header_timeout_s, cap = 3.0, 32
    token = "chaos-" + os.urandom(16).hex()
    client = RunPodClient(
        world.devstack.env["RUNPOD_API_KEY"], world.devstack.env["RUNPOD_API_BASE_URL"]
    )
    spec = PodSpec(
        image="local/comfyui:test",
        gpu_types=["NVIDIA GeForce RTX 4090"],
        env={
            "ENABLE_R2_SYNC": "false",
            "RP_POD_LEASE_S": "0",
            "RP_POD_TOKEN": token,
            "RP_PROXY_HEADER_TIMEOUT_S": f"{header_timeout_s:g}",
            "RP_PROXY_MAX_UNAUTHENTICATED": str(cap),
        },
    )
    started = time.monotonic()
    pod = client.launch(spec, "chaos-strangers")
    try:
        local = wait_until(lambda: world.emulator.local_pod(pod.id), 60)
        assert local is not None
        url = f"http://127.0.0.1:{local.comfy_port}/system_stats"
        auth = {"Authorization": f"Bearer {token}"}
        assert wait_until(lambda: _answers(url, auth), 60), "the pod never answered"
        opened = time.monotonic()
        strangers = [Stranger(local.comfy_port, slow=i % 2 == 0) for i in range(50)]
        latencies = []
        while time.monotonic() - opened < header_timeout_s + 2.0:
            for stranger in strangers:
                stranger.poke(time.monotonic() - opened)
            began = time.perf_counter()
            assert requests.get(url, headers=auth, timeout=5).status_code == 200
            latencies.append((time.perf_counter() - began) * 1000)
            time.sleep(0.2)
        open_now = sum(s.closed_at is None for s in strangers)
        early = sum(
            s.closed_at is not None and s.closed_at < header_timeout_s - 0.5 for s in strangers
        )
        for stranger in strangers:
            stranger.sock.close()
    finally:
        client.terminate(pod.id)
    result = world.measure(
        f"50 strangers on a pod's port (header limit {header_timeout_s:g} s, cap {cap})",
        [],
        started,
        10.0,
    )
    p50 = statistics.median(latencies)
    result.acceptance = (
        f"bounded: {open_now} of 50 open after {header_timeout_s + 2:g} s, {early} closed over the "
        f"cap at once; authorized p50 {p50:.1f} ms (max {max(latencies):.1f} ms, n={len(latencies)})"
    )
    record(request, result)
    assert open_now == 0 and early >= 50 - cap, result.acceptance
    assert p50 < 100.0, result.acceptance
    accept(result)


def _answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return requests.get(url, headers=headers, timeout=2).status_code == 200
    except requests.RequestException:
        return False
