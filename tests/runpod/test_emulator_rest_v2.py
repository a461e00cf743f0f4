"""The emulator's REST v2 over raw HTTP: what RunPod's OpenAPI document makes it refuse and answer."""

from __future__ import annotations

import json
import time

import pytest
import requests
from runpod_helpers import GPU_4090

from rp_devstack.runpod_emulator import EmulatorAdmin, RunPodEmulator
from rp_devstack.runpod_emulator.contract import load_contract
from rp_devstack.stack import NETWORK_VOLUME_ID

BODY = {"name": "raw-pod", "image": "img", "gpu": {"id": GPU_4090}, "ports": ["8188/http"]}


@pytest.fixture
def v2(runpod_emulator: RunPodEmulator) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {runpod_emulator.api_key}"
    yield session
    for pod in runpod_emulator.pods(include_terminated=False):
        runpod_emulator.terminate_pod(pod["id"])
    assert runpod_emulator.contract_violations == []


def test_undocumented_field_is_a_422_naming_it(runpod_emulator, v2) -> None:
    answer = v2.post(f"{runpod_emulator.base_url}/v2/pods", json={**BODY, "minVcpuCount": 2})
    assert answer.status_code == 422
    assert answer.headers["Content-Type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 422 and problem["title"] == "Unprocessable Entity"
    assert problem["errors"] == ["$: additional properties 'minVcpuCount' not allowed"]
    nested = v2.post(f"{runpod_emulator.base_url}/v2/pods", json={**BODY, "gpu": {"ID": "x"}})
    assert "$.gpu.id: missing required property" in nested.json()["errors"]
    assert runpod_emulator.pods() == []


def test_image_or_template_and_gpu_rules(runpod_emulator, v2) -> None:
    no_image = {k: v for k, v in BODY.items() if k != "image"}
    answer = v2.post(f"{runpod_emulator.base_url}/v2/pods", json=no_image)
    assert answer.status_code == 422 and answer.json()["errors"] == [
        "$.image: missing required property"
    ]
    no_gpu = {k: v for k, v in BODY.items() if k != "gpu"}
    rule = v2.post(f"{runpod_emulator.base_url}/v2/pods", json=no_gpu)
    assert rule.status_code == 400 and "exactly one of gpu or cpu" in rule.json()["detail"]


def test_auth_problems(runpod_emulator) -> None:
    missing = requests.get(f"{runpod_emulator.base_url}/v2/pods")
    assert missing.status_code == 401 and missing.json()["detail"] == "missing bearer token"
    wrong = requests.get(
        f"{runpod_emulator.base_url}/v2/pods", headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid bearer token"


def test_catalog_availability_needs_product_and_reflects_stock(runpod_emulator, v2) -> None:
    base = f"{runpod_emulator.base_url}/v2/catalog/gpus"
    assert v2.get(base, params={"include": "AVAILABILITY"}).status_code == 400
    plain = v2.get(base).json()["gpus"][0]
    assert "availability" not in plain and plain["price"] == {"secure": 0.69, "community": 0.55}
    runpod_emulator.set_stock(GPU_4090, 0, datacenter="EU-RO-1")
    runpod_emulator.set_stock(GPU_4090, 2, datacenter="US-KS-2")
    gpus = v2.get(base, params={"include": "AVAILABILITY", "product": "POD"}).json()["gpus"]
    g4090 = next(g for g in gpus if g["id"] == GPU_4090)
    assert g4090["availability"] == "MEDIUM"
    assert g4090["dataCenters"] == [
        {"id": "US-KS-2", "name": "US Kansas 2", "availability": "MEDIUM"}
    ]
    runpod_emulator.set_stock(GPU_4090, 0)
    gone = v2.get(base, params={"include": "AVAILABILITY", "product": "POD"}).json()["gpus"][0]
    assert gone["availability"] == "NONE" and "dataCenters" not in gone


def test_lifecycle_actions_and_terminate(runpod_emulator, v2) -> None:
    runpod_emulator.set_boot_delay(600)
    base = runpod_emulator.base_url
    created = v2.post(
        f"{base}/v2/pods",
        json={**BODY, "mounts": {"network": [{"volumeId": NETWORK_VOLUME_ID, "path": "/w"}]}},
    )
    assert created.status_code == 201 and "RateLimit" in created.headers
    pod = created.json()
    assert pod["status"] == "PROVISIONING" and pod["actions"] == ["stop", "terminate"]
    assert pod["dataCenterId"] == "EU-RO-1" and pod["runtime"] is None
    restart = v2.post(f"{base}/v2/pods/{pod['id']}/action", json={"action": "restart"})
    assert restart.status_code == 409
    EmulatorAdmin(base).error_pod(pod["id"], "image pull failed")
    failed = v2.get(f"{base}/v2/pods/{pod['id']}").json()
    assert failed["status"] == "ERROR" and failed["cost"] == 0.0
    assert failed["actions"] == ["start", "terminate"]
    gone = v2.post(f"{base}/v2/pods/{pod['id']}/action", json={"action": "terminate"})
    assert gone.status_code == 204 and gone.content == b""
    assert v2.get(f"{base}/v2/pods/{pod['id']}").status_code == 404
    assert v2.delete(f"{base}/v2/pods/{pod['id']}").status_code == 404


def test_logs_are_server_sent_events(runpod_emulator, v2) -> None:
    base = runpod_emulator.base_url
    pod = v2.post(f"{base}/v2/pods", json=BODY).json()
    deadline = time.monotonic() + 60
    while v2.get(f"{base}/v2/pods/{pod['id']}").json()["status"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with v2.get(
        f"{base}/v2/pods/{pod['id']}/logs", params={"tail": 2}, stream=True, timeout=10
    ) as stream:
        assert stream.headers["Content-Type"] == "text/event-stream"
        assert stream.headers["Cache-Control"] == "no-cache"
        events = []
        for line in stream.iter_lines(decode_unicode=True):
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
            if len(events) == 2:
                break
    assert all(set(e) == {"ts", "source", "line"} for e in events)
    assert {e["source"] for e in events} <= {"system", "container"}


def test_429_carries_retry_after_and_does_nothing(runpod_emulator, v2) -> None:
    EmulatorAdmin(runpod_emulator.base_url).fail_next(
        1, "429", operation="create_pod", retry_after=7
    )
    answer = v2.post(f"{runpod_emulator.base_url}/v2/pods", json=BODY)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert answer.json()["title"] == "Too Many Requests"
    assert runpod_emulator.pods() == []


def test_lose_fault_performs_then_drops_the_answer(runpod_emulator, v2) -> None:
    runpod_emulator.fail_next(1, "lose", operation="create_pod")
    with pytest.raises(requests.ConnectionError):
        v2.post(f"{runpod_emulator.base_url}/v2/pods", json=BODY)
    assert len(runpod_emulator.pods()) == 1  # the side effect happened


def test_graphql_operation_names_stay_aliases(runpod_emulator) -> None:
    runpod_emulator.fail_next(1, "5xx", operation="podFindAndDeployOnDemand")
    query = 'mutation { podFindAndDeployOnDemand(input: {gpuTypeId: "x"}) { id } }'
    answer = requests.post(
        f"{runpod_emulator.base_url}/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {runpod_emulator.api_key}"},
    )
    assert answer.status_code == 502


def test_request_counts_per_route(runpod_emulator, v2) -> None:
    v2.get(f"{runpod_emulator.base_url}/v2/pods")
    v2.get(f"{runpod_emulator.base_url}/v2/pods/abc")
    counts = EmulatorAdmin(runpod_emulator.base_url).request_counts()
    assert counts == {"GET /v2/pods": 1, "GET /v2/pods/{id}": 1}


def test_answer_validation_catches_a_broken_answer() -> None:
    """The check the emulator runs on every answer fails on one the document forbids."""
    contract = load_contract()
    op = contract.match("GET", "/v2/pods/abc")
    assert op is not None
    errors = contract.response_errors(op, 200, "application/json", {"id": "abc", "name": "x"})
    assert "$.status: missing required property" in errors


def test_rest_backend_sends_only_documented_fields() -> None:
    """Every body RestBackend builds, from the richest request we make, passes the document."""
    from rp_pipeline.integrations.runpod.pods import PodSpec
    from rp_pipeline.integrations.runpod.pods import deploy_request as _deploy_request
    from rp_pipeline.integrations.runpod.rest import create_body, template_body

    contract = load_contract()
    spec = PodSpec(
        image="local/comfyui:test", env={"A": "1"}, template_id="tpl1", network_volume_id="vol1"
    )
    with_volume = _deploy_request(spec, "dagster-x", "run", "SECURE", "EU-RO-1", "vol1")
    no_volume = _deploy_request(
        PodSpec(image="local/comfyui:test", cloud_type="ALL"), "dagster-y", "run", "ALL", None
    )
    for request in (with_volume, no_volume):
        body = create_body({**request, "gpuTypeId": GPU_4090})
        assert contract.schema_errors("CreatePodRequest", body) == [], body
    assert create_body({**with_volume, "gpuTypeId": GPU_4090})["mounts"] == {
        "network": [{"volumeId": "vol1", "path": "/workspace"}]
    }
    template = {
        "name": "wan22",
        "imageName": "img",
        "containerDiskInGb": 20,
        "volumeInGb": 100,
        "volumeMountPath": "/workspace",
        "ports": "8188/http,22/tcp",
        "env": [{"key": "A", "value": "1"}],
        "dockerArgs": "",
        "readme": "ignored by v2",
        "isServerless": False,
        "isPublic": False,
        "startSsh": True,
        "containerRegistryAuthId": "",
    }
    assert contract.schema_errors("CreateTemplateRequest", template_body(template)) == []
    assert contract.schema_errors("UpdateTemplateRequest", template_body(template)) == []


def test_a_fault_window_ends_after_its_seconds(runpod_emulator) -> None:
    """An outage of a given length: faults given `seconds` stop firing once it has passed."""
    runpod_emulator.fail_next(1000, "5xx", "list_pods", seconds=0.5)
    assert runpod_emulator.take_fault("list_pods") is not None
    time.sleep(0.6)
    assert runpod_emulator.take_fault("list_pods") is None
