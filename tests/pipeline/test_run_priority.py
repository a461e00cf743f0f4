"""Run priority with real runs: with one pod slot, a run tagged `dagster/priority=10` that queues
after two untagged runs gets the next pod (each run in its own process, one shared instance)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef
from dagster._core.test_utils import create_run_for_test

from rp_devstack.stack import Devstack
from rp_pipeline.definitions import resources_for
from rp_pipeline.fleet.slots import POD_POOL, PodSlots
from tests.pipeline.helpers import register_requests, write_prompts

REPO = Path(__file__).resolve().parents[2]


def waiting_runs(instance: DagsterInstance) -> set[str]:
    return set(instance.event_log_storage.get_concurrency_info(POD_POOL).pending_run_ids)


@pytest.mark.slow  # three runs one after the other, each in a fresh process
def test_a_high_priority_run_queued_after_two_low_priority_ones_gets_the_next_pod(
    devstack: Devstack, pipeline_env: dict[str, str], prompts_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    keys = write_prompts(prompts_dir, "priority", 3)
    env = {**os.environ, "DAGSTER_HOME": str(home), "RP_MAX_PODS": "1"}
    runs = (("low-1", keys[0], "0"), ("low-2", keys[1], "0"), ("high", keys[2], "10"))
    procs: list[subprocess.Popen[bytes]] = []
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        register_requests(instance, resources_for("devstack"))
        # A run in progress holds the one slot (it just said it is alive, so it keeps it).
        holder = create_run_for_test(instance, status=DagsterRunStatus.STARTED)
        instance.report_engine_event("holding the pod slot", holder)
        holding = PodSlots(instance, holder.run_id, 1)
        assert holding.claim(1, 0.0) == ["pod-0"]
        try:
            for n, (name, key, priority) in enumerate(runs, start=1):
                with (tmp_path / f"{name}.log").open("wb") as sink:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "tests.pipeline.run_prioritized_process",
                             key, priority],
                            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
                        )
                    )  # fmt: skip
                deadline = time.monotonic() + 60
                while len(waiting_runs(instance)) < n:  # queued before the next one starts
                    assert time.monotonic() < deadline, f"{name} never waited for a slot"
                    assert procs[-1].poll() is None, (tmp_path / f"{name}.log").read_text()
                    time.sleep(0.2)
            holding.free("pod-0")
            codes = [proc.wait(timeout=240) for proc in procs]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name, *_ in runs}
        assert codes == [0, 0, 0], logs
        by_key = {}
        for record in instance.get_run_records():
            partition = record.dagster_run.tags.get("dagster/asset_partition_range_start")
            if partition:
                by_key[record.dagster_run.run_id] = partition
    pods = [p for p in devstack.emulator.pods() if p["env"].get("DAGSTER_RUN_ID") in by_key]
    pods.sort(key=lambda p: p["created_at"])
    first_served = [by_key[p["env"]["DAGSTER_RUN_ID"]] for p in pods]
    assert first_served == [keys[2], keys[0], keys[1]], logs
