"""The chaos suite's world and its measurements.

A `World` is the devstack with R2 behind a `FaultProxy` (pipeline and pods both reach R2 through
it), a Dagster instance in its own DAGSTER_HOME (so runs in other processes share it) and a
prompts dir. `World.measure` turns what a case did into one report row:

- pods orphaned: pods of the case not TERMINATED once the cleanup window is over (the pod
  reaper ticks during the window, as the daemon would run it); the harness then terminates them
  so the next case starts clean;
- time to cleanup: from the end of the case's runs until its last pod was TERMINATED;
- videos requested / materialized / in R2 (pipeline objects whose key names a case partition);
- duplicate pods: per run, the most pods of that run alive at the same moment, minus one; and
  the peak of live pods across the case (the pod limit);
- the error the user saw: each failed step's error (class and message), as the UI shows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dagster import AssetKey, DagsterEventType, DagsterInstance

from rp_agent.keys import pipeline_partition_key
from rp_devstack.fault_proxy import FaultProxy
from rp_devstack.stack import Devstack
from rp_pipeline.definitions import resources_for
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.model import VideoRequest

REPO = Path(__file__).resolve().parents[2]
SMALL = {"width": 320, "height": 192, "frames": 9, "fps": 8}
# What the user-facing error of a failed step must be: a Dagster Failure (the op's own message),
# not a crash of some library exception with its traceback.
# A bad prompts-file entry is reported as a logged warning line (the asset itself succeeds).
USER_ERROR_CLASSES = {"Failure", "warning"}

# Rows of the report, by pytest node id (filled by the cases, verdicts by conftest).
RESULTS: dict[str, dict[str, Any]] = {}


@dataclass
class CaseResult:
    case: str
    requested: int = 0
    materialized: int = 0
    in_r2: int = 0
    in_r2_not_materialized: int = 0
    pods: int = 0
    duplicate_pods: int = 0
    peak_live_pods: int = 0
    orphaned_pods: int = 0
    cleanup_s: float | None = None
    errors: list[str] = field(default_factory=list)
    error_classes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    # What this case must deliver beyond the common acceptance, with what was measured.
    acceptance: str = ""

    @property
    def user_error(self) -> str:
        return " | ".join(self.errors) or "-"

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data["user_error"] = self.user_error
        return data


class World:
    def __init__(
        self, devstack: Devstack, proxy: FaultProxy, home: Path, prompts: Path, tag: str
    ) -> None:
        self.devstack = devstack
        self.proxy = proxy
        self.home = home
        self.prompts = prompts
        self.tag = tag
        self.instance = DagsterInstance.get()
        self.emulator = devstack.emulator  # a case may bring its own (sentinel secrets)
        self.resources = resources_for("devstack")
        self._pods_before = {p["id"] for p in devstack.emulator.pods()}
        self._peak = 0
        self._watching = threading.Event()
        self._watcher: threading.Thread | None = None

    def stop_watching(self) -> None:
        self._watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    # ---------------------------------------------------------------- requests

    def write_requests(self, prompts: list[str], **params: Any) -> list[str]:
        """One prompts file with these prompts (small videos); their partition keys."""
        entries = [
            {"prompt": f"{self.tag} {text}", "seed": 7 + i, "params": {**SMALL, **params}}
            for i, text in enumerate(prompts)
        ]
        path = self.prompts / f"{self.tag}-{len(list(self.prompts.iterdir()))}.yaml"
        path.write_text(yaml.safe_dump({"requests": entries}))
        return [VideoRequest.from_dict(e).key for e in entries]

    def register(self) -> Any:
        from dagster import materialize

        from rp_pipeline.defs.requests.assets import video_requests

        return materialize([video_requests], instance=self.instance, resources=self.resources)

    def r2(self) -> R2Resource:
        env = os.environ
        return R2Resource(
            endpoint=self.devstack.env["R2_ENDPOINT"],  # straight to S3: measuring, not faulted
            bucket=env["R2_BUCKET"],
            access_key_id=env["R2_ACCESS_KEY_ID"],
            secret_access_key=env["R2_SECRET_ACCESS_KEY"],
        )

    # ---------------------------------------------------------------- faults

    def emulator_fault(self, **body: Any) -> str | None:
        """POST /_emulator/faults; the emulator's refusal as text (a knob it lacks), else None."""
        return _post(f"{self.devstack.env['RUNPOD_API_BASE_URL']}/_emulator/faults", body)

    def emulator_admin(self, path: str, body: dict[str, Any] | None = None) -> str | None:
        return _post(f"{self.devstack.env['RUNPOD_API_BASE_URL']}/_emulator/{path}", body or {})

    def case_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.emulator.pods() if p["id"] not in self._pods_before]

    def live_case_pods(self) -> list[dict[str, Any]]:
        return [p for p in self.case_pods() if p["desired_status"] != "TERMINATED"]

    def when_first_pod(self, action: Callable[[dict[str, Any]], None], timeout_s=120.0) -> None:
        """Run `action(pod)` in the background as soon as the case's first pod exists."""

        def wait() -> None:
            give_up = time.monotonic() + timeout_s
            while time.monotonic() < give_up:
                pods = self.case_pods()
                if pods:
                    action(pods[0])
                    return
                time.sleep(0.1)

        threading.Thread(target=wait, daemon=True).start()

    def when_first_video(
        self, action: Callable[[str], None], keys: list[str], timeout_s=120.0
    ) -> None:
        """Run `action(object key)` in the background once a video of `keys` is in R2."""
        r2 = self.r2()

        def wait() -> None:
            give_up = time.monotonic() + timeout_s
            while time.monotonic() < give_up:
                found = [k for k in self._video_keys(r2) if pipeline_partition_key(k) in keys]
                if found:
                    action(found[0])
                    return
                time.sleep(0.2)

        threading.Thread(target=wait, daemon=True).start()

    # ---------------------------------------------------------------- running

    def start_watching(self) -> None:
        """Sample the number of live case pods (for the pod-limit column)."""

        def watch() -> None:
            while not self._watching.wait(0.2):
                self._peak = max(self._peak, len(self.live_case_pods()))

        self._watcher = threading.Thread(target=watch, daemon=True)
        self._watcher.start()

    def run_in_process(self, keys: list[str], resources: dict[str, Any] | None = None) -> Any:
        from rp_pipeline.tools.batch import materialize_batch

        return materialize_batch(self.instance, resources or self.resources, keys)

    @contextmanager
    def run_process(
        self,
        key: str,
        extra_env: dict[str, str] | None = None,
        pod_env: dict[str, str] | None = None,
    ) -> Iterator[Any]:
        """A run of `key` in its own process (sharing this DAGSTER_HOME); killed on exit.
        `extra_env`: the run process's environment; `pod_env`: added to its pods' env."""
        env = {**os.environ, "DAGSTER_HOME": str(self.home), **(extra_env or {})}
        argv = [sys.executable, "-m", "tests.pipeline.run_batch_process", key]
        proc = subprocess.Popen(
            [*argv, json.dumps(pod_env or {})],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    # ---------------------------------------------------------------- measuring

    def measure(
        self,
        case: str,
        keys: list[str],
        started: float,
        cleanup_window_s: float = 20.0,
    ) -> CaseResult:
        ended = time.monotonic()
        self._watching.set()
        cleanup = self._await_cleanup(time.time(), cleanup_window_s)
        pods = self.case_pods()
        orphans = [p for p in pods if p["desired_status"] != "TERMINATED"]
        for pod in orphans:  # the next case starts clean; the row keeps the count
            self.emulator.terminate_pod(pod["id"])
        run_ids = {p["env"].get("DAGSTER_RUN_ID") for p in pods}
        materialized = self.materialized(keys)
        in_r2 = {pipeline_partition_key(k) for k in self._video_keys(self.r2())} & set(keys)
        result = CaseResult(
            case=case,
            requested=len(keys),
            materialized=len(materialized),
            in_r2=len(in_r2),
            in_r2_not_materialized=len(in_r2 - materialized),
            pods=len(pods),
            duplicate_pods=sum(
                _max_overlap([p for p in pods if p["env"].get("DAGSTER_RUN_ID") == run_id]) - 1
                for run_id in run_ids
                if run_id
            ),
            peak_live_pods=self._peak,
            orphaned_pods=len(orphans),
            cleanup_s=cleanup,
            wall_s=round(ended - started, 1),
        )
        for run in reversed(self.instance.get_runs()):  # the case's own DAGSTER_HOME: all its runs
            for cls, message in self.step_errors(run.run_id):
                result.error_classes.append(cls)
                result.errors.append(message)
        return result

    def materialized(self, keys: list[str]) -> set[str]:
        records = self.instance.fetch_materializations(AssetKey("generated_video"), limit=1000)
        return {r.partition_key for r in records.records if r.partition_key in keys}

    def step_errors(self, run_id: str) -> list[tuple[str, str]]:
        found = []
        for record in self.instance.get_records_for_run(
            run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
        ).records:
            event = record.event_log_entry.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_FAILURE:
                error = event.event_specific_data.error
                cls, message = error.cls_name or "?", error.message.strip()
                # A crash in an op arrives wrapped; what the user reads first is the cause.
                while cls == "DagsterExecutionStepExecutionError" and error.cause is not None:
                    error = error.cause
                    cls = f"{error.cls_name} (crash in op)"
                    message = error.message.strip()
                found.append((cls, message))
        return found

    def _await_cleanup(self, ended_at: float, window_s: float) -> float | None:
        """Seconds from `ended_at` (wall clock, like the emulator's terminated_at) until the
        case's last pod was terminated; None if some pod outlived the window."""
        from dagster import build_sensor_context

        from rp_pipeline.defs.teardown.sensors import pod_reaper

        next_tick = 0.0
        while True:
            now = time.monotonic()
            if not self.live_case_pods():
                last = max((p["terminated_at"] or 0.0 for p in self.case_pods()), default=0.0)
                return round(max(0.0, last - ended_at), 1)
            if time.time() - ended_at > window_s:
                return None
            if now >= next_tick:  # the deployment's daemon runs the reaper every minute
                with build_sensor_context(instance=self.instance, resources=self.resources) as c:
                    pod_reaper(c)
                next_tick = now + 10.0
            time.sleep(0.5)

    @staticmethod
    def _video_keys(r2: R2Resource) -> list[str]:
        keys: list[str] = []
        for page in r2.iter_keys(f"{r2.prefix}/"):
            keys += [k for k in page.keys if k.endswith(".mp4")]
        return keys


def _max_overlap(pods: list[dict[str, Any]]) -> int:
    """The most of these pods alive at one moment (0 for none)."""
    edges = []
    for pod in pods:
        edges.append((pod["created_at"], 1))
        edges.append((pod["terminated_at"] or float("inf"), -1))
    alive = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        alive += step
        peak = max(peak, alive)
    return peak


def _post(url: str, body: dict[str, Any]) -> str | None:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        return f"{exc.code}: {exc.read().decode(errors='replace')[:200]}"
    return None


def one_line(message: str) -> bool:
    return "\n" not in message.strip() and "Traceback" not in message


def write_report(path_stem: Path, rows: list[dict[str, Any]]) -> None:
    """bench/results/chaos.md and chaos.json: one row per case."""
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit,
        "cpus": os.cpu_count(),
    }
    path_stem.with_suffix(".json").write_text(json.dumps({**meta, "cases": rows}, indent=2))
    lines = [
        "# Chaos suite: faults on the devstack",
        "",
        f"`make chaos` at {meta['generated_at']} (commit {commit}, {meta['cpus']} CPUs). One row",
        "per case; acceptance of every case: 0 orphan pods, 0 duplicate pods, every video that",
        "reached R2 is materialized, every failure the user sees is one line (a Dagster `Failure`);",
        "the acceptance column adds what the case itself must deliver, with what was measured.",
        "",
        "| case | verdict | acceptance (measured) | pods orphaned | cleanup s | requested "
        "| materialized | in R2 | duplicate pods | peak live pods | error the user saw |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        cleanup = "-" if row.get("cleanup_s") is None else row["cleanup_s"]
        error = str(row.get("user_error", "-")).replace("|", "/")
        if len(error) > 220:
            error = error[:219] + "…"
        acceptance = str(row.get("acceptance") or "common").replace("|", "/")
        lines.append(
            f"| {row['case']} | {row.get('verdict', '?')} | {acceptance} "
            f"| {row['orphaned_pods']} | {cleanup} "
            f"| {row['requested']} | {row['materialized']} | {row['in_r2']} "
            f"| {row['duplicate_pods']} | {row['peak_live_pods']} | {error} |"
        )
    notes = [f"- **{r['case']}**: {'; '.join(r['notes'])}" for r in rows if r.get("notes")]
    if notes:
        lines += ["", "Notes:", "", *notes]
    failed = [r for r in rows if str(r.get("verdict", "")).startswith("FAIL")]
    if failed:
        lines += ["", "Failed acceptance:", ""]
        lines += [f"- **{r['case']}**: {r['verdict'][5:].strip()}" for r in failed]
    path_stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
