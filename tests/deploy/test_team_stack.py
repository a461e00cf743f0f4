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

Measured numbers (peak pods, queue time, restart outcome) are printed with -s and recorded
as user properties in the junit XML.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from rp_devstack.runpod_emulator import EmulatorAdmin
from rp_devstack.stack import Devstack
from tests.deploy.postgres import PostgresCluster
from tests.deploy.team_stack import TeamDagster
from tests.e2e.graphql_api import GraphQLApi
from tests.e2e.requests_config import new_partition_key, request_spec, run_config

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning"),
]

MAX_PODS = 2
RUNS = 12
GONE = {"TERMINATED", "EXITED"}
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
RUN_STATUSES = """
query($ids: [String!]) {
  runsOrError(filter: {runIds: $ids}) { ... on Runs { results { runId status } } }
}"""
ACTIVE_RUNS = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId status } } } }"""


class TeamStack:
    def __init__(self, devstack: Devstack, dagster: TeamDagster) -> None:
        self.devstack = devstack
        self.dagster = dagster
        self.admin = EmulatorAdmin(devstack.emulator.base_url)
        self.api = GraphQLApi(dagster.url)

    def live_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.admin.pods() if p["desired_status"] not in GONE]

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
    devstack = Devstack(root / "devstack", boot_delay_s=0.3, agent_grace_s=10.0)
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
    team: TeamStack, record_property: Any
) -> None:
    sampler = PodSampler(team)
    sampler.start()
    started = time.monotonic()
    try:
        run_ids = submit_one_video_runs(team.api, RUNS)
        submitted_s = time.monotonic() - started

        # Mid-queue: some runs done, others still queued behind the limit.
        def progress() -> dict[str, str]:
            return team.wait_statuses(run_ids, FINISHED | IN_PROGRESS, timeout_s=60)

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

    assert final == dict.fromkeys(run_ids, "SUCCESS")
    assert sampler.errors == []
    assert sampler.samples > 0
    assert 1 <= sampler.peak <= MAX_PODS
    # The queue drained: nothing queued or running is left anywhere in the instance.
    assert team.dagster.graphql(ACTIVE_RUNS)["runsOrError"]["results"] == []
    # One pod per run, every one terminated: no run lost its pod, no pod lost its run.
    pods = [p for p in team.admin.pods() if p["env"].get("DAGSTER_RUN_ID") in set(run_ids)]
    assert sorted(p["env"]["DAGSTER_RUN_ID"] for p in pods) == sorted(run_ids)
    assert team.live_pods() == []

    for name, value in {
        "peak_live_pods": sampler.peak,
        "queue_total_s": round(total_s, 1),
        "submit_s": round(submitted_s, 1),
        "queued_at_daemon_kill": len(queued_at_kill),
        "daemon_starts": team.dagster.daemon_starts,
    }.items():
        record_property(name, value)
    print(
        f"\n12-run queue: peak live pods {sampler.peak} (limit {MAX_PODS}), "
        f"{total_s:.1f} s from first submit to last finish ({submitted_s:.1f} s to submit), "
        f"daemon SIGKILLed with {len(queued_at_kill)} run(s) queued and restarted: "
        f"{sum(s == 'SUCCESS' for s in final.values())}/{RUNS} succeeded, 0 pods left"
    )
