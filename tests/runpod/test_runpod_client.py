"""The RunPod contract suite: RunPodClient against the emulator over both APIs (REST v2 and
GraphQL, see conftest `api`): launch fallback, readiness, terminate, error mapping."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from runpod_helpers import GPU_4090, GPU_A6000, GPU_L40S, spec

from rp_devstack.runpod_emulator import RunPodEmulator
from rp_devstack.stack import NETWORK_VOLUME_ID
from rp_pipeline.integrations.runpod.resource import (
    NoCapacityError,
    PodLaunchError,
    PodNotReadyError,
    RunPodAuthError,
    RunPodClient,
    RunPodResource,
    RunPodTransientError,
    UnknownGpuError,
)
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, pod_token

RUN_ID = "0123456789abcdef-run"


def live_pods(emulator: RunPodEmulator) -> list[dict]:
    return [p for p in emulator.pods() if p["desired_status"] != "TERMINATED"]


def test_launch_tags_pod_with_run_id_and_cost(client: RunPodClient, runpod_emulator) -> None:
    pod = client.launch(spec(env={"WAN_720P": "true"}), RUN_ID)
    assert pod.name.startswith("dagster-01234567-")
    assert pod.run_id == RUN_ID and pod.env["DAGSTER_RUN_ID"] == RUN_ID
    assert pod.env["WAN_720P"] == "true"
    assert pod.cost_per_hr == 0.69 and pod.gpu_type in ("RTX 4090", GPU_4090)
    assert pod.datacenter in ("EU-RO-1", "US-KS-2")
    assert client.get(pod.id) is not None
    assert [p.id for p in client.list_pods(name_prefix="dagster-01234567")] == [pod.id]
    client.terminate(pod.id)


def test_fallback_to_next_gpu_when_first_has_no_stock(client, runpod_emulator) -> None:
    runpod_emulator.set_stock(GPU_4090, 0)
    pod = client.launch(spec(gpu_types=[GPU_4090, GPU_A6000]), RUN_ID)
    assert pod.gpu_type in ("RTX A6000", GPU_A6000)
    assert [p["gpu_type_id"] for p in runpod_emulator.pods()] == [GPU_A6000]
    client.terminate(pod.id)


def test_no_capacity_anywhere_lists_every_gpu_tried(client, runpod_emulator, api) -> None:
    runpod_emulator.set_stock(GPU_4090, 0)
    runpod_emulator.set_stock(GPU_A6000, 0)
    with pytest.raises(NoCapacityError) as info:
        client.launch(spec(gpu_types=[GPU_4090, GPU_A6000, GPU_L40S], max_cost_per_hr=0.8), RUN_ID)
    # REST v2 reads the stock first and never sends a create that cannot place; GraphQL has
    # no per-GPU stock figure we trust, so it tries and reads the capacity error.
    no_stock = "no stock (catalog availability NONE)" if api == "rest" else "no capacity"
    assert info.value.attempts == [
        (GPU_4090, no_stock),
        (GPU_A6000, no_stock),
        (GPU_L40S, "$0.99/hr is above max_cost_per_hr $0.80"),
    ]
    assert runpod_emulator.pods() == []
    if api == "rest":
        assert "POST /v2/pods" not in runpod_emulator.request_counts()


def test_network_volume_pins_datacenter_and_secure_cloud(client, runpod_emulator) -> None:
    runpod_emulator.set_stock(GPU_4090, 0, datacenter="EU-RO-1")  # the volume's datacenter
    with pytest.raises(NoCapacityError):
        client.launch(spec(network_volume_id=NETWORK_VOLUME_ID, cloud_type="COMMUNITY"), RUN_ID)
    pod = client.launch(spec(), RUN_ID)  # without the volume, US-KS-2 still has 4090s
    (record,) = runpod_emulator.pods()
    assert record["datacenter"] == "US-KS-2" and pod.datacenter == "US-KS-2"
    client.terminate(pod.id)
    with pytest.raises(PodLaunchError, match="no-such-volume is not in this RunPod account"):
        client.launch(spec(network_volume_id="no-such-volume"), RUN_ID)
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.id]  # no pod for the bad volume


def test_several_volumes_choose_gpu_and_datacenter_together(client, runpod_emulator) -> None:
    runpod_emulator.add_network_volume("models-us", "models-us", "US-KS-2")
    volumes = f"{NETWORK_VOLUME_ID},models-us"  # EU-RO-1 first
    runpod_emulator.set_stock(GPU_4090, 0, datacenter="EU-RO-1")
    pod = client.launch(spec(network_volume_id=volumes), RUN_ID)
    (record,) = runpod_emulator.pods()
    assert pod.datacenter == record["datacenter"] == "US-KS-2"
    client.terminate(pod.id)
    runpod_emulator.set_stock(GPU_4090, 0)  # nowhere now: the next GPU type, in EU-RO-1
    runpod_emulator.set_stock(GPU_A6000, 0, datacenter="US-KS-2")
    pod = client.launch(spec(gpu_types=[GPU_4090, GPU_A6000], network_volume_id=volumes), RUN_ID)
    assert pod.datacenter == "EU-RO-1" and pod.gpu_type in ("RTX A6000", GPU_A6000)
    client.terminate(pod.id)
    one = client.launch(spec(gpu_types=[GPU_A6000], network_volume_id=NETWORK_VOLUME_ID), RUN_ID)
    assert one.datacenter == "EU-RO-1"  # a single volume works as before
    client.terminate(one.id)


def test_ready_only_when_comfyui_answers_not_on_desired_status(client, runpod_emulator) -> None:
    runpod_emulator.set_boot_delay(1.5)
    pod = client.launch(spec(), RUN_ID)
    booting = client.get(pod.id)
    assert booting is not None and booting.desired_status == "RUNNING"
    assert booting.runtime_ports == []
    states: list[str] = []
    ready = client.wait_until_ready(pod.id, deadline_s=60, on_state=states.append)
    assert states[0] in (
        "RUNNING, container starting (no runtime yet)",  # GraphQL
        "PROVISIONING (RunPod is allocating the machine)",  # REST v2
    )
    assert ready.comfyui_url.startswith("http://127.0.0.1:")
    # The probe got through the pod's proxy with the token from the pod's env; nobody else does.
    token = pod_token(ready.pod)
    assert token is not None
    auth = {"Authorization": f"Bearer {token}"}
    assert requests.get(ready.comfyui_url + "/system_stats", headers=auth, timeout=5).ok
    assert requests.get(ready.comfyui_url + "/system_stats", timeout=5).status_code == 401
    client.terminate(pod.id)


def test_a_pod_without_token_never_becomes_ready(client, runpod_emulator) -> None:
    bare = spec()
    bare.env.pop(POD_TOKEN_ENV)
    pod = client.launch(bare, RUN_ID)
    with pytest.raises(PodNotReadyError, match="waiting for ComfyUI") as info:
        client.wait_until_ready(pod.id, deadline_s=8)
    assert info.value.terminated


def test_timeout_terminates_the_pod(client, runpod_emulator) -> None:
    runpod_emulator.set_boot_delay(600)
    pod = client.launch(spec(), RUN_ID)
    with pytest.raises(PodNotReadyError, match="not ready within 1 s") as info:
        client.wait_until_ready(pod.id, deadline_s=1)
    assert info.value.terminated
    assert client.get(pod.id) is None
    assert live_pods(runpod_emulator) == []


def test_timeout_can_keep_the_pod(client, runpod_emulator) -> None:
    runpod_emulator.set_boot_delay(600)
    pod = client.launch(spec(), RUN_ID)
    with pytest.raises(PodNotReadyError, match="rp-launch terminate"):
        client.wait_until_ready(pod.id, deadline_s=0.5, terminate_on_timeout=False)
    assert client.get(pod.id) is not None
    client.terminate(pod.id)


def test_exited_pod_fails_fast(client, runpod_emulator, api) -> None:
    runpod_emulator.set_boot_delay(600)
    pod = client.launch(spec(), RUN_ID)
    runpod_emulator.crash_pod(pod.id)
    with pytest.raises(PodNotReadyError, match="it is EXITED") as info:
        client.wait_until_ready(pod.id, deadline_s=120)
    assert info.value.terminated
    assert live_pods(runpod_emulator) == []
    # REST v2 has the pod's log: its last lines are in the message (GraphQL has none).
    assert ("last log lines: " in str(info.value)) == (api == "rest")


def test_error_pod_fails_fast_with_reason_and_log(client, runpod_emulator, api) -> None:
    runpod_emulator.set_boot_delay(600)
    pod = client.launch(spec(), RUN_ID)
    runpod_emulator.error_pod(pod.id, "image pull failed: manifest unknown")
    with pytest.raises(PodNotReadyError) as info:
        client.wait_until_ready(pod.id, deadline_s=120)
    message = str(info.value)
    assert info.value.terminated and live_pods(runpod_emulator) == []
    if api == "rest":
        assert "it is ERROR" in message and "image pull failed: manifest unknown" in message
        assert client.pod_logs(pod.id) is None  # terminated: no log any more
    else:
        assert "it is EXITED" in message  # GraphQL knows no ERROR status


def test_pod_logs_are_the_last_lines(client, runpod_emulator, api) -> None:
    pod = client.launch(spec(), RUN_ID)
    client.wait_until_ready(pod.id, deadline_s=60)
    lines = client.pod_logs(pod.id, 3)
    if api == "graphql":
        assert lines is None
    else:
        assert lines is not None and 1 <= len(lines) <= 3
        everything = client.pod_logs(pod.id, 100)
        assert everything is not None and everything[0].startswith(f"pod {pod.id} scheduled")
        assert lines == everything[-len(lines) :]
    client.terminate(pod.id)


def test_terminate_is_idempotent_and_stops_processes(client, runpod_emulator) -> None:
    pod = client.launch(spec(), RUN_ID)
    client.wait_until_ready(pod.id, deadline_s=60)
    pids = runpod_emulator.pods()[0]["pids"]
    assert pids
    client.terminate(pod.id)
    client.terminate(pod.id)
    client.terminate("neverexisted00")
    assert client.get(pod.id) is None
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid)
    cost = runpod_emulator.billing()["total_cost"]
    assert cost > 0 and runpod_emulator.billing()["total_cost"] == cost  # billing stopped


def test_terminate_retries_transient_errors(client, runpod_emulator) -> None:
    pod = client.launch(spec(), RUN_ID)
    runpod_emulator.fail_next(2, "5xx", operation="terminate_pod")
    client.terminate(pod.id)
    assert live_pods(runpod_emulator) == []


def test_bad_key_is_our_auth_error_without_the_key(runpod_emulator, api) -> None:
    bad = RunPodClient("sk-this-is-wrong-123", runpod_emulator.base_url, api=api)
    with pytest.raises(RunPodAuthError, match="RUNPOD_API_KEY") as info:
        bad.launch(spec(), RUN_ID)
    assert "sk-this-is-wrong-123" not in str(info.value)
    assert "sk-this-is-wrong-123" not in repr(bad)


def test_unknown_gpu_fails_before_launching(client, runpod_emulator) -> None:
    with pytest.raises(UnknownGpuError, match="NVIDIA GeForce RTX 9999"):
        client.launch(spec(gpu_types=[GPU_4090, "NVIDIA GeForce RTX 9999"]), RUN_ID)
    assert runpod_emulator.pods() == []


def test_lost_create_response_does_not_double_create(runpod_emulator, api) -> None:
    impatient = RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        request_timeout_s=1,
        retry_backoff_s=0.05,
        api=api,
    )
    # The create takes effect but its answer comes after the client's timeout.
    runpod_emulator.fail_next(1, "hang", operation="create_pod", hang_seconds=3)
    pod = impatient.launch(spec(), RUN_ID)
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.id]
    impatient.terminate(pod.id)


def test_create_answer_lost_after_the_side_effect(client, runpod_emulator) -> None:
    # The connection closes without an answer once the pod exists: found by name, not re-made.
    runpod_emulator.fail_next(1, "lose", operation="create_pod")
    pod = client.launch(spec(), RUN_ID)
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.id]
    client.terminate(pod.id)


def test_429_waits_retry_after_and_creates_once(client, runpod_emulator, api) -> None:
    runpod_emulator.fail_next(1, "429", operation="create_pod", retry_after=1)
    if api == "graphql":
        # GraphQL's 429 is a transient error retried with our own backoff and name lookup.
        pod = client.launch(spec(), RUN_ID)
    else:
        started = time.monotonic()
        pod = client.launch(spec(), RUN_ID)
        assert time.monotonic() - started >= 1.0  # never re-sent before Retry-After
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.id]
    client.terminate(pod.id)


def test_create_5xx_is_retried_once_nothing_was_created(client, runpod_emulator) -> None:
    runpod_emulator.fail_next(2, "5xx", operation="create_pod")
    pod = client.launch(spec(), RUN_ID)
    assert [p["id"] for p in runpod_emulator.pods()] == [pod.id]
    client.terminate(pod.id)


def test_reads_retry_5xx_then_give_up_with_clear_error(runpod_emulator, api) -> None:
    client = RunPodClient(
        runpod_emulator.api_key,
        runpod_emulator.base_url,
        retry_backoff_s=0.05,
        read_patience_s=1.0,
        api=api,
    )
    runpod_emulator.fail_next(3, "5xx", operation="gpu_types")
    assert len(client.gpu_types()) == 5
    runpod_emulator.fail_next(1000, "5xx", operation="list_pods")
    started = time.monotonic()
    with pytest.raises(RunPodTransientError, match=r"non-JSON body.*still failing after 1 s"):
        client.list_pods()
    assert time.monotonic() - started < 3.0  # the read patience bounds it, not a count


def test_network_error_is_clear(tmp_path, api) -> None:
    from rp_devstack.ports import free_port

    nobody = RunPodClient(
        "key", f"http://127.0.0.1:{free_port()}", retry_backoff_s=0.01, read_patience_s=0.5, api=api
    )
    with pytest.raises(RunPodTransientError, match="RUNPOD_API_BASE_URL"):
        nobody.gpu_types()


def test_secret_references_pass_verbatim_and_resolve_in_the_pod(client, runpod_emulator) -> None:
    runpod_emulator.add_secret("civitai", "s3cr3t-value")
    pod = client.launch(spec(env={"CIVITAI_API_KEY": "{{ RUNPOD_SECRET_civitai }}"}), RUN_ID)
    assert pod.env["CIVITAI_API_KEY"] == "{{ RUNPOD_SECRET_civitai }}"
    local = runpod_emulator.local_pod(pod.id)
    assert local is not None
    environ = Path(f"/proc/{local.processes['comfyui'].pid}/environ").read_bytes().split(b"\0")
    assert b"CIVITAI_API_KEY=s3cr3t-value" in environ
    assert f"RUNPOD_POD_ID={pod.id}".encode() in environ
    client.terminate(pod.id)


def test_interruptible_pod_uses_the_bid(client, runpod_emulator, api) -> None:
    if api == "rest":
        with pytest.raises(PodLaunchError, match="RUNPOD_API=graphql"):
            client.launch(spec(interruptible=True, bid_per_gpu=0.40), RUN_ID)
        assert runpod_emulator.pods() == []
        return
    with pytest.raises(PodLaunchError, match="bid price is too low"):
        client.launch(spec(interruptible=True, bid_per_gpu=0.05), RUN_ID)
    pod = client.launch(spec(interruptible=True, bid_per_gpu=0.40), RUN_ID)
    (record,) = live_pods(runpod_emulator)
    assert record["pod_type"] == "INTERRUPTABLE" and pod.cost_per_hr == 0.40
    client.terminate(pod.id)
    at_spot_price = client.launch(spec(interruptible=True, max_cost_per_hr=0.5), RUN_ID)
    assert at_spot_price.cost_per_hr == 0.34  # the 4090's spot price, under the cap
    client.terminate(at_spot_price.id)


def test_save_template(client, runpod_emulator) -> None:
    saved = client.save_template(
        {
            "name": "wan22",
            "imageName": "img",
            "ports": "8188/http",
            "env": [{"key": "A", "value": "1"}],
        }
    )
    assert saved["id"] and [t["name"] for t in runpod_emulator.templates()] == ["wan22"]
    updated = client.save_template({"id": saved["id"], "name": "wan22", "imageName": "img2"})
    assert updated["id"] == saved["id"] and runpod_emulator.templates()[0]["imageName"] == "img2"


def test_resource_builds_client_and_spec(runpod_emulator, api) -> None:
    resource = RunPodResource(
        api_key=runpod_emulator.api_key,
        api_base_url=runpod_emulator.base_url,
        api=api,
        image="local/comfyui:test",
        gpu_types=[GPU_A6000],
        network_volume_id=NETWORK_VOLUME_ID,
        env={"ENABLE_R2_SYNC": "true"},
    )
    assert runpod_emulator.api_key not in repr(resource)
    built = resource.pod_spec(name="video-1", env={"A": "1"})
    assert built.gpu_types == [GPU_A6000] and built.name == "video-1" and built.env == {"A": "1"}
    built_client = resource.get_client()
    assert (
        type(built_client.backend).__name__
        == {"rest": "RestBackend", "graphql": "GraphQLBackend"}[api]
    )
    assert built_client.gpu_types()[0].id == GPU_4090


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_list_templates(client, runpod_emulator) -> None:
    assert client.list_templates() == []
    saved = client.save_template({"name": "wan22", "imageName": "img", "ports": "8188/http"})
    assert client.list_templates() == [
        {"id": saved["id"], "name": "wan22", "imageName": "img", "ports": "8188/http"}
    ]


def test_admin_http_api_drives_faults_stock_and_crashes(client, runpod_emulator) -> None:
    from rp_devstack.runpod_emulator import EmulatorAdmin

    admin = EmulatorAdmin(runpod_emulator.base_url)
    admin.set_stock(GPU_4090, 0, datacenter="EU-RO-1")
    admin.set_stock(GPU_4090, 0, datacenter="US-KS-2")
    with pytest.raises(NoCapacityError):
        client.launch(spec(), RUN_ID)
    admin.set_stock(GPU_4090, 1)
    admin.set_boot_delay(600)
    pod = client.launch(spec(), RUN_ID)
    admin.crash_pod(pod.id)
    assert client.get(pod.id).desired_status == "EXITED"
    admin.fail_next(1, "5xx", operation="get_pod")
    assert client.get(pod.id) is not None  # retried through the 502
    client.terminate(pod.id)
    (billed,) = admin.billing()["pods"]
    assert billed["id"] == pod.id and billed["desired_status"] == "TERMINATED"
    assert admin.pods()[0]["cost_per_hr"] == 0.69
    admin.reset()
