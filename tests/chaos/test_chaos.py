"""Faults on the devstack, one case per row of bench/results/chaos.md.

Each case causes one fault, measures what happened (`World.measure`) and records the row; the
assertions are the acceptance: 0 orphan pods, 0 duplicate pods, every video that reached R2 is
materialized, every failure the user sees is one clear line, plus what the case must deliver.
Cases marked `chaos` boot pods and take tens of seconds each (`make chaos`); the others launch
nothing and run with the normal test command.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import materialize

from rp_agent.keys import pipeline_partition_key, pod_of
from rp_devstack.runpod_emulator import GPU_CATALOG, RunPodEmulator
from rp_pipeline.defs.requests.assets import video_requests
from rp_pipeline.defs.videos.assets import generated_video
from tests.chaos.harness import RESULTS, SMALL, USER_ERROR_CLASSES, CaseResult, World, one_line
from tests.pipeline.helpers import with_settings

SLOW_STEPS = {"COMFY_STANDIN_STEP_SECONDS": "0.25"}  # ~5 s per video: room to hit mid-batch


def record(request: pytest.FixtureRequest, result: CaseResult) -> CaseResult:
    RESULTS[request.node.nodeid] = result.row()
    return result


def accept(
    result: CaseResult,
    *,
    materialized: int | None = None,
    pods: int | None = None,
    must_fail: bool = False,
    error_mentions: str | None = None,
) -> None:
    """The acceptance of every case, plus what this case must deliver."""
    problems = []
    if result.orphaned_pods:
        problems.append(f"{result.orphaned_pods} orphan pod(s) after the cleanup window")
    if result.duplicate_pods:
        problems.append(f"{result.duplicate_pods} duplicate pod(s)")
    if result.in_r2_not_materialized:
        problems.append(f"{result.in_r2_not_materialized} video(s) in R2 but not materialized")
    for cls, message in zip(result.error_classes, result.errors, strict=True):
        if cls not in USER_ERROR_CLASSES or not one_line(message):
            first = message.strip().splitlines()[0][:160] if message.strip() else ""
            problems.append(f"not one clear line: {cls}: {first}")
    if materialized is not None and result.materialized != materialized:
        problems.append(
            f"materialized {result.materialized} of {result.requested}, want {materialized}"
        )
    if pods is not None and result.pods != pods:
        problems.append(f"{result.pods} pod(s) launched, want {pods}")
    if must_fail and not result.errors:
        problems.append("the run did not fail, so the user was told nothing")
    if error_mentions and not any(error_mentions in e for e in result.errors):
        problems.append(f"no error names {error_mentions!r}")
    assert not problems, "; ".join(problems)


def logical_faults_supported(world: World) -> bool:
    """Whether the emulator maps logical operation names (create_pod, gpu_types...) to calls:
    one 5xx for `gpu_types`, then a raw GPU-types query must get it."""
    if world.emulator_fault(count=1, mode="5xx", operation="gpu_types"):
        return False
    query = json.dumps({"query": "query { gpuTypes { id } }"}).encode()
    request = urllib.request.Request(
        f"{world.devstack.env['RUNPOD_API_BASE_URL']}/graphql",
        query,
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {world.devstack.env['RUNPOD_API_KEY']}",
        },
    )
    try:
        urllib.request.urlopen(request, timeout=10).read()
    except urllib.error.HTTPError as exc:
        return exc.code >= 500
    world.emulator_admin("reset")  # the unmatched probe fault must not hit the case
    return False


def inject(world: World, result_notes: list[str], **fault: Any) -> None:
    refused = world.emulator_fault(**fault)
    if refused:
        result_notes.append(f"emulator refused fault {fault}: {refused}")


def need_logical_faults(world: World, notes: list[str]) -> None:
    if not logical_faults_supported(world):
        notes.append(
            "the emulator ignores logical fault operations (create_pod, list_pods, "
            "terminate_pod...): fault NOT injected, the row shows the unfaulted path"
        )


def run_case(
    request: pytest.FixtureRequest,
    world: World,
    name: str,
    keys: list[str],
    resources: dict[str, Any] | None = None,
    cleanup_window_s: float = 20.0,
    notes: list[str] | None = None,
) -> CaseResult:
    started = time.monotonic()
    world.run_in_process(keys, resources)
    result = world.measure(name, keys, started, cleanup_window_s)
    result.notes += notes or []
    return record(request, result)


# ------------------------------------------------------------------------- pods and ComfyUI


def marker_ignored(
    request: pytest.FixtureRequest, world: World, result: CaseResult, key: str, marker: str
) -> None:
    if key in world.materialized([key]):
        result.notes.append(f"the ComfyUI stand-in ignored the {marker} marker: fault NOT injected")
        record(request, result)


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("name", "marker", "settings"),
    [
        pytest.param("one prompt fails in ComfyUI", "[[fail]]", {}, id="fails"),
        pytest.param(
            "one prompt of 3 hangs (deadline 20 s)",
            "[[hang]]",
            {"prompt_deadline_s": 20.0},
            id="hangs",
        ),
    ],
)
def test_one_prompt_of_three_goes_wrong_in_comfyui(
    request: pytest.FixtureRequest, world: World, name: str, marker: str, settings: dict[str, Any]
) -> None:
    keys = world.write_requests(["a lake", f"a forest {marker}", "a desert"])
    assert world.register().success
    resources = with_settings(world.resources, **settings) if settings else None
    result = run_case(request, world, name, keys, resources)
    marker_ignored(request, world, result, keys[1], marker)
    accept(result, materialized=2, pods=1, must_fail=True, error_mentions=keys[1])


@pytest.mark.chaos
def test_pod_dies_mid_batch(request: pytest.FixtureRequest, world: World) -> None:
    keys = world.write_requests(["a lake", "a forest", "a desert"])
    assert world.register().success
    crashed: list[str] = []

    def crash(object_key: str) -> None:
        pod_id = pod_of(object_key, world.r2().prefix)
        crashed.append(pod_id)
        world.emulator.crash_pod(pod_id)

    world.when_first_video(crash, keys)
    resources = with_settings(
        world.resources, extra_pod_env={**world.resources["settings"].extra_pod_env, **SLOW_STEPS}
    )
    result = run_case(request, world, "pod dies mid-batch", keys, resources)
    result.notes.append(
        f"crashed pod {crashed[0]} after its first video" if crashed else "no crash"
    )
    record(request, result)
    assert crashed, "the pod was never crashed (no video reached R2)"
    accept(result, must_fail=result.materialized < 3)


# ------------------------------------------------------------------------- RunPod API faults


@pytest.mark.chaos
@pytest.mark.parametrize(
    ("name", "prompt", "faults", "cleanup_window_s", "pods"),
    [
        pytest.param(
            "create answer lost, then 4 s of 5xx on the pod list",
            "a lighthouse",
            [
                {"count": 1, "mode": "lose", "operation": "create_pod"},
                # 4 s of 5xx on the pod list: every list call in that window fails.
                {"count": 1000, "mode": "5xx", "operation": "list_pods", "seconds": 4.0},
            ],
            20.0,
            None,
            id="create_answer_lost_then_pod_list_5xx",
        ),
        pytest.param(
            "25 x 5xx on terminate",
            "a harbour",
            [{"count": 25, "mode": "5xx", "operation": "terminate_pod"}],
            60.0,
            None,
            id="terminate_answers_5xx_25_times",
        ),
        pytest.param(
            "API 5xx x3 on create",
            "a bridge",
            [{"count": 3, "mode": "5xx", "operation": "create_pod"}],
            20.0,
            1,
            id="api_5xx_on_create",
        ),
    ],
)
def test_runpod_api_fault(
    request: pytest.FixtureRequest,
    world: World,
    name: str,
    prompt: str,
    faults: list[dict[str, Any]],
    cleanup_window_s: float,
    pods: int | None,
) -> None:
    notes: list[str] = []
    need_logical_faults(world, notes)
    [key] = world.write_requests([prompt])
    assert world.register().success
    for fault in faults:
        inject(world, notes, **fault)
    result = run_case(request, world, name, [key], cleanup_window_s=cleanup_window_s, notes=notes)
    assert not [n for n in notes if "NOT injected" in n or "refused" in n], notes
    accept(result, materialized=1, pods=pods)


@pytest.mark.chaos
def test_no_capacity(request: pytest.FixtureRequest, world: World) -> None:
    [key] = world.write_requests(["a canyon"])
    assert world.register().success
    for gpu in GPU_CATALOG:
        world.emulator.set_stock(gpu.id, 0)
    result = run_case(request, world, "no capacity (every GPU type out of stock)", [key])
    accept(result, materialized=0, pods=0, must_fail=True)


# ------------------------------------------------------------------------- R2 faults


@pytest.mark.chaos
def test_r2_refuses_connections_for_15s(request: pytest.FixtureRequest, world: World) -> None:
    keys = world.write_requests(["a meadow", "a glacier"])
    assert world.register().success
    world.when_first_pod(lambda _pod: world.proxy.refuse(15.0))
    result = run_case(request, world, "R2 refuses connections for 15 s", keys)
    result.notes.append(f"proxy: {world.proxy.stats}")
    record(request, result)
    accept(result, materialized=2)


@pytest.mark.chaos
@pytest.mark.parametrize("seconds", [15.0, 70.0])
def test_r2_frozen(request: pytest.FixtureRequest, world: World, seconds: float) -> None:
    keys = world.write_requests(["a river", "a volcano"])
    assert world.register().success
    world.when_first_pod(lambda _pod: world.proxy.freeze(seconds))
    result = run_case(request, world, f"R2 frozen {seconds:.0f} s", keys, cleanup_window_s=30.0)
    accept(result, materialized=2)


# ------------------------------------------------------------------------- the run process


@pytest.mark.chaos
def test_run_process_sigkilled(request: pytest.FixtureRequest, world: World) -> None:
    """The run's process dies (SIGKILL: no handler runs) while its pod boots."""
    [key] = world.write_requests(["a storm"])
    assert world.register().success
    started = time.monotonic()
    with world.run_process(key, SLOW_STEPS) as proc:
        give_up = time.monotonic() + 120
        while not world.case_pods() and time.monotonic() < give_up and proc.poll() is None:
            time.sleep(0.1)
        proc.kill()
    result = world.measure("run process SIGKILLed (pod booting)", [key], started, 120.0)
    statuses = [run.status.value for run in world.instance.get_runs()]
    result.notes.append(f"the killed run after the cleanup window's reaper ticks: {statuses}")
    record(request, result)
    assert result.pods == 1, "the run was killed before it launched a pod"
    accept(result)


@pytest.mark.chaos
def test_three_runs_at_once_with_one_pod_slot(
    request: pytest.FixtureRequest, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_MAX_PODS", "1")
    keys = world.write_requests(["a fox", "an owl", "a hare"])
    assert world.register().success
    started = time.monotonic()
    with (
        world.run_process(keys[0]) as a,
        world.run_process(keys[1]) as b,
        world.run_process(keys[2]) as c,
    ):
        for proc in (a, b, c):
            proc.wait(timeout=400)
    result = world.measure("3 one-video runs at once, RP_MAX_PODS=1", keys, started)
    record(request, result)
    accept(result, materialized=3)
    assert result.peak_live_pods <= 1, f"{result.peak_live_pods} pods alive at once"


# ------------------------------------------------------------------------- bad input (no pod)


def launch_config_case(
    request: pytest.FixtureRequest,
    world: World,
    name: str,
    key: str,
    spec: Any,
    cleanup_window_s: float = 0.0,
) -> CaseResult:
    world.instance.add_dynamic_partitions("video_requests", [key])
    config = {"requests": {key: spec}}
    started = time.monotonic()
    materialize(
        [video_requests, generated_video],
        selection=[generated_video],
        instance=world.instance,
        resources=world.resources,
        partition_key=key,
        run_config={"ops": {"generated_video": {"ops": {"validate_requests": {"config": config}}}}},
        raise_on_error=False,
    )
    return record(request, world.measure(name, [key], started, cleanup_window_s))


def test_frames_over_comfyuis_max(request: pytest.FixtureRequest, world: World) -> None:
    key = f"{world.tag}-frames"
    spec = {"prompt": "a fox", "params": {**SMALL, "frames": 16385}}
    result = launch_config_case(request, world, "frames=16385", key, spec)
    accept(result, pods=0, must_fail=True, error_mentions="frames must be 4n+1 between 1 and 16384")


@pytest.mark.parametrize(
    ("label", "spec", "needle"),
    [
        ("seed \"abc\"", {"prompt": "a fox", "seed": "abc"}, "'seed' must be a whole number"),
        ("seed 1.5", {"prompt": "a fox", "seed": 1.5}, "got float 1.5"),
        ("missing prompt", {"seed": 1}, "'prompt' is missing"),
        ("params not a mapping", {"prompt": "a fox", "params": "wide"}, "'params' must be a mapping"),
    ],
)  # fmt: skip
def test_malformed_request_fields(
    request: pytest.FixtureRequest, world: World, label: str, spec: Any, needle: str
) -> None:
    key = f"{world.tag}-{uuid.uuid4().hex[:4]}"
    result = launch_config_case(request, world, label, key, spec)
    accept(result, pods=0, must_fail=True, error_mentions=needle)


def test_one_malformed_entry_in_a_prompts_file(
    request: pytest.FixtureRequest, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    good = [{"prompt": f"{world.tag} a calm sea {i}", "params": SMALL} for i in range(2)]
    bad = {"prompt": f"{world.tag} a bad one", "params": {**SMALL, "frames": 16385}}
    path = world.prompts / "mixed.yaml"
    path.write_text(yaml.safe_dump({"requests": [good[0], bad, good[1]]}))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        outcome = world.register()
    result = world.measure("one malformed entry in a prompts file", [], started, 0.0)
    result.requested = 3
    registered = world.instance.get_dynamic_partitions("video_requests")
    lines = [r.getMessage() for r in caplog.records if "not registered" in r.getMessage()]
    result.errors = sorted(set(lines))
    result.error_classes = ["warning"] * len(result.errors)
    result.notes.append(f"registered {len(registered)} of 3 entries")
    record(request, result)
    assert outcome.success, "one bad entry failed the whole asset"
    assert len(registered) == 2
    assert len(result.errors) == 1 and f"{path}: entry 1: " in result.errors[0]
    accept(result)


@pytest.mark.chaos
def test_partition_key_with_a_slash(request: pytest.FixtureRequest, world: World) -> None:
    from dagster import build_sensor_context

    from rp_pipeline.defs.previews.sensors import r2_new_objects

    key = f"{world.tag}/b"  # `a/b`: must not be taken for partition `b`
    spec = {"prompt": "a fox on a hill", "seed": 3, "params": SMALL}
    result = launch_config_case(request, world, "partition key `a/b`", key, spec, 20.0)
    objects = [k for k in world._video_keys(world.r2()) if world.tag in k]
    attributed = sorted({str(pipeline_partition_key(k)) for k in objects})
    with build_sensor_context(instance=world.instance, resources=world.resources) as context:
        sensor_result = r2_new_objects(context)
    external = [e for e in sensor_result.asset_events if world.tag in str(e.metadata)]
    result.notes.append(f"objects attributed to {attributed}; external records {len(external)}")
    record(request, result)
    assert attributed == [key]
    assert external == []
    accept(result, materialized=1, pods=1)


# ------------------------------------------------------------------------- secrets


@pytest.mark.chaos
def test_sentinel_secrets_appear_nowhere(
    request: pytest.FixtureRequest,
    world: World,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from rp_pipeline.definitions import resources_for

    api_key = f"SENTINEL-API-{uuid.uuid4().hex}"
    secret = f"SENTINEL-R2SECRET-{uuid.uuid4().hex}"
    key_id = f"SENTINELKEYID{uuid.uuid4().hex[:12].upper()}"
    emulator = RunPodEmulator(
        tmp_path / "sentinel-runpod",
        api_key,
        boot_delay_s=0.3,
        agent_grace_s=10.0,
        secrets_store={"R2_ACCESS_KEY_ID": key_id, "R2_SECRET_ACCESS_KEY": secret},
    ).start()
    try:
        for name, value in {
            "RUNPOD_API_KEY": api_key,
            "RUNPOD_API_BASE_URL": emulator.base_url,
            "R2_ACCESS_KEY_ID": key_id,
            "R2_SECRET_ACCESS_KEY": secret,
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("RUNPOD_NETWORK_VOLUME_ID", raising=False)
        world.emulator = emulator
        world.resources = resources_for("devstack")
        caplog.set_level(logging.DEBUG)
        [key] = world.write_requests(["a quiet street"])
        assert world.register().success
        result = run_case(request, world, "sentinel secrets (API key, R2 secret, key id)", [key])
        texts = {
            "event log": "\n".join(str(r) for run in world.instance.get_runs()
                                   for r in world.instance.all_logs(run.run_id)),
            "our logs": "\n".join(
                r.getMessage() for r in caplog.records
                if r.levelno >= logging.INFO or not r.name.startswith(("botocore", "urllib3"))
            ),
        }  # fmt: skip
        files = [p for p in world.home.rglob("*") if p.is_file()]
        hits = {
            name: sum(text.count(s) for s in (api_key, secret, key_id))
            for name, text in texts.items()
        }
        hits["DAGSTER_HOME files"] = sum(
            p.read_bytes().count(s.encode()) for p in files for s in (api_key, secret, key_id)
        )
        result.notes.append(f"sentinel hits: {hits} ({len(files)} storage files scanned)")
        record(request, result)
        assert sum(hits.values()) == 0, hits
        accept(result, materialized=1)
    finally:
        world.emulator = world.devstack.emulator
        emulator.stop()
