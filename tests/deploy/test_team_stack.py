"""The team deployment with real processes: PostgreSQL, `dagster-daemon`, a code server and
the webserver (deploy/dagster.yaml, RP_MAX_PODS=2) against the devstack.

- 12 one-video runs queued at once through the GraphQL API: the emulator never has more than
  2 live pods, all 12 succeed, the queue drains;
- the daemon is SIGKILLed mid-queue and restarted: queued runs wait for it, no run is lost,
  no pod is left;
- a run past its maximum run time is cancelled by run monitoring and its pod terminated;
- the pod reaper and the R2 sensor tick under the daemon (their ticks are in the instance);
- with 1,000 request partitions the asset's partition page opens in the browser and an R2
  sensor tick makes as many list requests as with 10.

Measured numbers (peak pods, queue time, restart outcome, list requests, page time) are
printed; see them with `pytest -s` (or -rP).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance

from rp_devstack.runpod_emulator import EmulatorAdmin
from rp_devstack.stack import Devstack
from tests.deploy.postgres import PostgresCluster
from tests.deploy.team_stack import DEPLOY, TeamDagster
from tests.e2e.browser import UI, browser_available, make_driver
from tests.e2e.conftest import is_gone
from tests.e2e.graphql_api import GraphQLApi
from tests.e2e.requests_config import new_partition_key, request_spec, run_config
from tests.pipeline.helpers import tick

pytestmark = [
    pytest.mark.stack,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

MAX_PODS = 2
RUNS = 12
BOOT_DELAY_S = 1.0
# The first pods boot this slowly (a sleep, no CPU): far longer than the gap between two runs'
# start-ups, so the first two runs hold 2 live pods together while 10 runs wait behind the
# limit. Afterwards pods boot in BOOT_DELAY_S and the queue drains quickly.
SLOW_BOOT_S = 60.0
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
RUN_STATUSES = """
query($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) { ... on Runs { results { runId status } } }
}"""
RUN_TIMES = """
query($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) { ... on Runs { results { runId startTime endTime } } }
}"""
SENSOR_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 20) { status error { message } } } }
  }
}"""
RUN_EVENTS = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}"""
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}"""
ACTIVE_RUNS = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId status jobName } } } }"""
# Runs the cost table's sensor asks for when videos land: they only read the instance.
COST_TABLE_JOB = "refresh_gpu_costs"


class TeamStack:
    def __init__(self, devstack: Devstack, dagster: TeamDagster) -> None:
        self.devstack = devstack
        self.dagster = dagster
        self.admin = EmulatorAdmin(devstack.emulator.base_url)
        self.api = GraphQLApi(dagster.url)

    def most_runs_at_once(self, run_ids: list[str]) -> int:
        """From the runs' start and end times in the instance."""
        runs = self.dagster.graphql(RUN_TIMES, {"ids": run_ids})["runsOrError"]["results"]
        edges = sorted(
            [(r["startTime"], 1) for r in runs] + [(r["endTime"], -1) for r in runs],
            key=lambda edge: (edge[0], edge[1]),  # an end before a start at the same instant
        )
        most = current = 0
        for _, step in edges:
            current += step
            most = max(most, current)
        return most

    def live_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.admin.pods() if not is_gone(p)]

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        results = self.dagster.graphql(RUN_STATUSES, {"ids": run_ids})["runsOrError"]["results"]
        return {r["runId"]: r["status"] for r in results}

    def wait_statuses(
        self, run_ids: list[str], done: set[str], timeout_s: float, every_s: float = 1.0
    ) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.statuses(run_ids)
            if len(statuses) == len(run_ids) and set(statuses.values()) <= done:
                return statuses
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runs not in {sorted(done)} after {timeout_s:.0f} s: {statuses}"
                )
            time.sleep(every_s)


@pytest.fixture(scope="module")
def team(
    postgres: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TeamStack]:
    root = tmp_path_factory.mktemp("team")
    postgres.create_database("team")
    devstack = Devstack(root / "devstack", boot_delay_s=BOOT_DELAY_S, agent_grace_s=10.0)
    devstack.start()
    env = {
        **devstack.env,
        **postgres.env("team"),
        "RP_ENV": "devstack",
        "RP_MAX_PODS": str(MAX_PODS),
        "RP_RUN_MONITOR_INTERVAL_S": "2",
        "COMFY_STANDIN_STEP_SECONDS": "0.005",
    }
    dagster = TeamDagster(root / "dagster", env)
    try:
        dagster.start()
        yield TeamStack(devstack, dagster)
    finally:
        dagster.stop()
        devstack.stop()


class PodSampler(threading.Thread):
    """Lists the emulator's pods every 0.2 s; remembers the most that were live at once."""

    def __init__(self, stack: TeamStack) -> None:
        super().__init__(daemon=True)
        self.stack = stack
        self.peak = 0
        self.samples = 0
        self.errors: list[str] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                live = len(self.stack.live_pods())
                self.peak = max(self.peak, live)
                self.samples += 1
            except OSError as exc:
                self.errors.append(repr(exc))
            self._halt.wait(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)


def submit_one_video_runs(api: GraphQLApi, count: int) -> list[str]:
    run_ids = []
    for n in range(count):
        key = new_partition_key(f"team-q{n:02d}")
        api.add_partition(key)
        spec = request_spec(f"Queue test {n}: a paper boat on a pond, morning light", seed=4000 + n)
        run_ids.append(api.launch(key, run_config(key, spec)))
    return run_ids


@pytest.mark.timeout(900)
def test_twelve_queued_runs_never_exceed_the_pod_limit_and_survive_a_daemon_kill(
    team: TeamStack,
) -> None:
    sampler = PodSampler(team)
    sampler.start()
    team.admin.set_boot_delay(SLOW_BOOT_S)
    started = time.monotonic()
    try:
        run_ids = submit_one_video_runs(team.api, RUNS)
        submitted_s = time.monotonic() - started

        def progress() -> dict[str, str]:
            return team.wait_statuses(run_ids, FINISHED | IN_PROGRESS, timeout_s=60)

        # The limit is reached: two pods live at once, ten runs still queued behind them.
        deadline = time.monotonic() + SLOW_BOOT_S
        while sampler.peak < MAX_PODS:
            assert time.monotonic() < deadline, f"never {MAX_PODS} live pods: {progress()}"
            time.sleep(0.2)
        queued_at_peak = sum(s == "QUEUED" for s in progress().values())
        team.admin.set_boot_delay(BOOT_DELAY_S)
        assert queued_at_peak == RUNS - MAX_PODS

        # Mid-queue: some runs done, others still queued behind the limit.
        deadline = time.monotonic() + 600
        while sum(s == "SUCCESS" for s in progress().values()) < 3:
            assert time.monotonic() < deadline, progress()
            time.sleep(0.5)
        team.dagster.kill_daemon()
        at_kill = progress()
        queued_at_kill = {r for r, s in at_kill.items() if s == "QUEUED"}
        assert queued_at_kill, f"nothing left queued when the daemon was killed: {at_kill}"

        # Without a daemon nothing is dequeued: runs already started finish, queued ones wait.
        deadline = time.monotonic() + 300
        while any(s in {"STARTING", "STARTED", "NOT_STARTED"} for s in progress().values()):
            assert time.monotonic() < deadline, progress()
            time.sleep(0.5)
        while_down = progress()
        assert {r for r, s in while_down.items() if s == "QUEUED"} == queued_at_kill

        team.dagster.start_daemon()
        team.dagster.wait_daemon_healthy()
        final = team.wait_statuses(run_ids, FINISHED, timeout_s=600)
        total_s = time.monotonic() - started
    finally:
        sampler.stop()
        team.admin.set_boot_delay(BOOT_DELAY_S)

    assert final == dict.fromkeys(run_ids, "SUCCESS")
    assert sampler.errors == []
    assert sampler.samples > 0
    assert sampler.peak == MAX_PODS
    # The queue did run jobs side by side (the limit, not a serial queue, kept pods at 2).
    runs_at_once = team.most_runs_at_once(run_ids)
    assert runs_at_once == MAX_PODS
    # The queue drained: no generation run is queued or running anywhere in the instance (the
    # cost table's refresh, asked for by its sensor as the videos landed, may still be).
    active = team.dagster.graphql(ACTIVE_RUNS)["runsOrError"]["results"]
    assert [run for run in active if run["jobName"] != COST_TABLE_JOB] == []
    # One pod per run, every one terminated: no run lost its pod, no pod lost its run.
    pods = [p for p in team.admin.pods() if p["env"].get("DAGSTER_RUN_ID") in set(run_ids)]
    assert sorted(p["env"]["DAGSTER_RUN_ID"] for p in pods) == sorted(run_ids)
    assert team.live_pods() == []

    print(
        f"\n12-run queue: peak live pods {sampler.peak} (limit {MAX_PODS}), "
        f"{runs_at_once} runs at once, "
        f"{total_s:.1f} s from first submit to last finish ({submitted_s:.1f} s to submit), "
        f"daemon SIGKILLed with {len(queued_at_kill)} run(s) queued and restarted: "
        f"{sum(s == 'SUCCESS' for s in final.values())}/{RUNS} succeeded, 0 pods left"
    )


@pytest.mark.timeout(300)
def test_a_run_past_its_maximum_run_time_is_stopped_and_its_pod_terminated(
    team: TeamStack,
) -> None:
    """Run monitoring (in the daemon) terminates it and marks it failed; the pod does not
    outlive the run."""
    key = new_partition_key("team-max-runtime")
    team.api.add_partition(key)
    spec = request_spec("A clock tower at dusk, pigeons", seed=4100)
    team.admin.set_boot_delay(600.0)  # the pod never gets ready: the run can only time out
    try:
        run_id = team.api.client.submit_job_execution(
            "generate_videos",
            run_config=run_config(key, spec),
            # No automatic retry here: this run is meant to end as it is.
            tags={
                "dagster/partition": key,
                "dagster/max_runtime": "25",
                "dagster/max_retries": "0",
            },
        )
        deadline = time.monotonic() + 120
        while not [p for p in team.admin.pods() if p["env"].get("DAGSTER_RUN_ID") == run_id]:
            assert time.monotonic() < deadline, team.statuses([run_id])
            time.sleep(0.5)
        assert team.wait_statuses([run_id], FINISHED, timeout_s=180) == {run_id: "FAILURE"}
    finally:
        team.admin.set_boot_delay(BOOT_DELAY_S)
    events = team.dagster.graphql(RUN_EVENTS, {"runId": run_id})["logsForRun"]["events"]
    assert any("Exceeded maximum runtime of 25 seconds" in (e.get("message") or "") for e in events)
    deadline = time.monotonic() + 120
    while [p for p in team.live_pods() if p["env"].get("DAGSTER_RUN_ID") == run_id]:
        assert time.monotonic() < deadline, "the cancelled run's pod is still live"
        time.sleep(1.0)
    pods = [p for p in team.admin.pods() if p["env"].get("DAGSTER_RUN_ID") == run_id]
    assert [p["desired_status"] for p in pods] == ["TERMINATED"]
    assert team.statuses([run_id]) == {run_id: "FAILURE"}  # and not retried: still the one run


def sensor_ticks(team: TeamStack, name: str) -> list[dict[str, Any]]:
    selector = {**team.api.repository_selector(), "sensorName": name}
    sensor = team.dagster.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
    assert sensor["__typename"] == "Sensor", sensor
    return list(sensor["sensorState"]["ticks"])


@pytest.mark.timeout(300)
def test_the_reaper_and_the_r2_sensor_tick_under_the_daemon(team: TeamStack) -> None:
    """The daemon evaluates them (through the code server); their ticks are in PostgreSQL."""
    selector = {**team.api.repository_selector(), "sensorName": "r2_new_objects"}
    started = team.dagster.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    deadline = time.monotonic() + 180
    while not (sensor_ticks(team, "r2_new_objects") and sensor_ticks(team, "pod_reaper")):
        assert time.monotonic() < deadline, team.dagster.log_tail("daemon")
        time.sleep(1.0)
    for name in ("r2_new_objects", "pod_reaper"):
        ticks = sensor_ticks(team, name)
        assert [t for t in ticks if t["status"] == "FAILURE"] == [], (name, ticks)


def list_request_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every S3 List* call any R2 client makes from now on, counted by a botocore event hook
    on the clients the R2 resource creates."""
    import rp_pipeline.integrations.r2.resource as r2_module

    calls: list[str] = []
    make_client = r2_module.make_r2_client

    def counting_client(*args: Any, **kwargs: Any) -> Any:
        client = make_client(*args, **kwargs)

        def count(model: Any, **_: Any) -> None:
            if model.name.startswith("List"):
                calls.append(model.name)

        client.meta.events.register("before-call.s3", count)
        return client

    monkeypatch.setattr(r2_module, "make_r2_client", counting_client)
    r2_module.shared_client.cache_clear()  # clients made before this would not count
    return calls


def open_instance(home: Path, pg: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    for name, value in pg.items():
        monkeypatch.setenv(name, value)
    return DagsterInstance.from_config(str(home))


@pytest.mark.timeout(600)
def test_a_thousand_request_partitions_cost_the_sensor_nothing_and_open_in_the_browser(
    team: TeamStack,
    postgres: PostgresCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rp_pipeline.defs.previews.sensors import r2_new_objects
    from rp_pipeline.integrations.r2.resource import R2Resource
    from rp_pipeline.integrations.runpod.resource import RunPodResource
    from rp_pipeline.tools.service import render_instance

    env = team.devstack.env
    resources = {
        "r2": R2Resource(
            endpoint=env["R2_ENDPOINT"],
            bucket=env["R2_BUCKET"],
            access_key_id=env["R2_ACCESS_KEY_ID"],
            secret_access_key=env["R2_SECRET_ACCESS_KEY"],
        ),
        "runpod": RunPodResource(
            api_key=env["RUNPOD_API_KEY"], api_base_url=env["RUNPOD_API_BASE_URL"]
        ),
    }
    keys = [f"scale-{n:04d}-{uuid.uuid4().hex[:6]}" for n in range(1000)]

    # The same R2 bucket (the queue test's videos in it), a fresh instance: 10, then 1,000.
    postgres.create_database("scale")
    home = tmp_path / "scale_home"
    render_instance(DEPLOY / "dagster.yaml", home, {})
    calls = list_request_counter(monkeypatch)
    with open_instance(home, postgres.env("scale"), monkeypatch) as instance:
        instance.add_dynamic_partitions("video_requests", keys[:10])
        _, cursor = tick(r2_new_objects, instance, resources)  # the bookmark tick
        calls.clear()
        tick(r2_new_objects, instance, resources, cursor)
        with_10 = len(calls)
        instance.add_dynamic_partitions("video_requests", keys[10:])
        assert len(instance.get_dynamic_partitions("video_requests")) == 1000
        calls.clear()
        tick(r2_new_objects, instance, resources, cursor)
        with_1000 = len(calls)
    assert with_10 > 0
    assert with_1000 == with_10

    # The team instance behind the webserver gets the 1,000 too; the asset page lists them.
    with open_instance(team.dagster.home, postgres.env("team"), monkeypatch) as instance:
        instance.add_dynamic_partitions("video_requests", keys)
        total = len(instance.get_dynamic_partitions("video_requests"))
    assert total >= 1000
    if not browser_available():
        pytest.fail("chromium + chromedriver are needed (apt-get install chromium chromium-driver)")
    driver = make_driver()
    try:
        ui = UI(driver, team.dagster.url, tmp_path / "shots")
        ui.shots_dir.mkdir(parents=True, exist_ok=True)
        opened = time.monotonic()
        ui.open("/assets/generated_video?view=partitions")
        ui.find(
            f"//*[normalize-space()='{total:,} Partitions Selected']", what=f"{total:,} partitions"
        )
        ui.find(f"//*[normalize-space()='{keys[0]}']", what="the first new partition key")
        # The list is virtualized: the last of the 1,000 is found through the name filter.
        ui.find("//input[contains(@placeholder, 'Filter by name')]").send_keys(keys[-1])
        ui.find(f"//*[normalize-space()='{keys[-1]}']", what="the last partition key")
        page_s = time.monotonic() - opened
        ui.screenshot("partitions-1000")
    finally:
        driver.quit()
    print(
        f"\nR2 sensor tick: {with_10} list requests with 10 partitions, {with_1000} with 1,000; "
        f"partitions page with {total:,} partitions open in {page_s:.1f} s"
    )
