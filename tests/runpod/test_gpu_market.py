"""GPU choice on the emulator: a price and a stand-in speed per GPU type, stock that changes on
an admin call or on a schedule (out of stock for a while), seen through both APIs as RunPod
shows them (REST v2 catalog `price` / `availability` / `dataCenters`, GraphQL `lowestPrice`)."""

from __future__ import annotations

import itertools
import json
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from runpod_helpers import GPU_4090, GPU_A6000

from rp_devstack.runpod_emulator import EmulatorAdmin, RunPodEmulator
from rp_devstack.runpod_emulator.catalog import CAPACITY_MESSAGE, GPU_CATALOG

CATALOG = "/v2/catalog/gpus"
WITH_STOCK = {"include": "AVAILABILITY", "product": "POD"}


@pytest.fixture
def v2(runpod_emulator: RunPodEmulator) -> Any:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {runpod_emulator.api_key}"
    yield session
    for pod in runpod_emulator.pods(include_terminated=False):
        runpod_emulator.terminate_pod(pod["id"])
    assert runpod_emulator.contract_violations == []


def catalog_entry(emulator: RunPodEmulator, v2: Any, gpu_id: str) -> dict[str, Any]:
    gpus = v2.get(emulator.base_url + CATALOG, params=WITH_STOCK).json()["gpus"]
    return dict(next(g for g in gpus if g["id"] == gpu_id))


def graphql(emulator: RunPodEmulator, v2: Any, query: str) -> dict[str, Any]:
    answer = v2.post(emulator.base_url + "/graphql", json={"query": query}).json()
    assert "errors" not in answer, answer
    return dict(answer["data"])


def create_pod(emulator: RunPodEmulator, v2: Any, gpu_id: str, **env: str) -> requests.Response:
    body = {"name": "gpu-choice", "image": "img", "gpu": {"id": gpu_id}, "ports": ["8188/http"]}
    if env:
        body["env"] = env
    return v2.post(emulator.base_url + "/v2/pods", json=body)  # type: ignore[no-any-return]


def test_every_type_has_its_own_price_and_speed(runpod_emulator: RunPodEmulator) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    types = {t["id"]: t for t in admin.gpu_types()}
    assert set(types) == {g.id for g in GPU_CATALOG}
    assert len({t["step_seconds"] for t in types.values()}) == len(types)
    assert len({t["secure_price"] for t in types.values()}) == len(types)
    # The fastest type is not the cheapest per step: a real choice to make.
    per_step = {i: t["secure_price"] * t["step_seconds"] for i, t in types.items()}
    fastest = min(types, key=lambda i: types[i]["step_seconds"])
    assert min(per_step, key=per_step.__getitem__) != fastest
    assert types[GPU_4090]["free"] == {"EU-RO-1": 8, "US-KS-2": 8}


def test_a_price_change_shows_in_both_apis_and_only_new_pods_pay_it(
    runpod_emulator: RunPodEmulator, v2: Any
) -> None:
    runpod_emulator.set_boot_delay(600)  # no need for the pods' processes to come up
    before = create_pod(runpod_emulator, v2, GPU_4090).json()
    assert before["cost"] == 0.69
    EmulatorAdmin(runpod_emulator.base_url).set_gpu_offer(GPU_4090, secure_price=0.89)

    entry = catalog_entry(runpod_emulator, v2, GPU_4090)
    assert entry["price"] == {"secure": 0.89, "community": 0.71}
    data = graphql(
        runpod_emulator,
        v2,
        'query { gpuTypes(input: {id: "NVIDIA GeForce RTX 4090"}) { securePrice communityPrice '
        "secureSpotPrice lowestPrice(input: {gpuCount: 1, secureCloud: true}) "
        "{ uninterruptablePrice minimumBidPrice } } }",
    )
    (gpu,) = data["gpuTypes"]
    assert (gpu["securePrice"], gpu["communityPrice"], gpu["secureSpotPrice"]) == (0.89, 0.71, 0.45)
    assert gpu["lowestPrice"] == {"uninterruptablePrice": 0.89, "minimumBidPrice": 0.45}

    after = create_pod(runpod_emulator, v2, GPU_4090).json()
    assert after["cost"] == 0.89
    rates = {p["id"]: p["cost_per_hr"] for p in runpod_emulator.pods()}
    assert (rates[before["id"]], rates[after["id"]]) == (0.69, 0.89)


def test_out_of_stock_for_a_while_then_back(runpod_emulator: RunPodEmulator, v2: Any) -> None:
    runpod_emulator.set_boot_delay(600)
    started = time.monotonic()
    EmulatorAdmin(runpod_emulator.base_url).set_stock(GPU_4090, 0, seconds=2.0)
    entry = catalog_entry(runpod_emulator, v2, GPU_4090)
    assert entry["availability"] == "NONE" and "dataCenters" not in entry
    refused = create_pod(runpod_emulator, v2, GPU_4090)
    assert refused.status_code == 400 and refused.json()["detail"] == CAPACITY_MESSAGE
    # Another type is not affected.
    assert catalog_entry(runpod_emulator, v2, GPU_A6000)["availability"] == "HIGH"

    assert time.monotonic() - started < 2.0, "too slow to look inside the window"
    time.sleep(started + 2.1 - time.monotonic())
    entry = catalog_entry(runpod_emulator, v2, GPU_4090)
    assert entry["availability"] == "HIGH"
    assert [dc["id"] for dc in entry["dataCenters"]] == ["EU-RO-1", "US-KS-2"]
    assert create_pod(runpod_emulator, v2, GPU_4090).status_code == 201


def test_stock_on_a_schedule(runpod_emulator: RunPodEmulator, v2: Any) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    started = time.monotonic()
    admin.set_stock(GPU_A6000, 1, "US-KS-2", after_s=1.5)
    admin.set_stock(GPU_A6000, 0, "EU-RO-1", after_s=1.5)
    (a6000,) = [t for t in admin.gpu_types() if t["id"] == GPU_A6000]
    assert [(c["datacenter"], c["count"]) for c in a6000["scheduled"]] == [
        ("US-KS-2", 1),
        ("EU-RO-1", 0),
    ]
    assert 0 < a6000["scheduled"][0]["in_s"] <= 1.5
    assert catalog_entry(runpod_emulator, v2, GPU_A6000)["availability"] == "HIGH"
    assert time.monotonic() - started < 1.5, "too slow to look before the change"

    time.sleep(started + 1.6 - time.monotonic())
    entry = catalog_entry(runpod_emulator, v2, GPU_A6000)
    assert entry["availability"] == "LOW"
    assert entry["dataCenters"] == [{"id": "US-KS-2", "name": "US Kansas 2", "availability": "LOW"}]
    data = graphql(
        runpod_emulator,
        v2,
        'query { gpuTypes(input: {id: "NVIDIA RTX A6000"}) '
        "{ lowestPrice(input: {gpuCount: 1}) { stockStatus maxUnreservedGpuCount } } }",
    )
    assert data["gpuTypes"][0]["lowestPrice"] == {"stockStatus": "Low", "maxUnreservedGpuCount": 1}
    assert next(t for t in admin.gpu_types() if t["id"] == GPU_A6000)["scheduled"] == []


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("stock", {"gpu_type_id": "NVIDIA GTX 1080", "count": 1}, "Invalid GPU type"),
        ("stock", {"gpu_type_id": GPU_4090, "count": -1}, "count must be >= 0"),
        ("stock", {"gpu_type_id": GPU_4090, "count": 1, "seconds": -2}, "seconds must be"),
        ("stock", {"gpu_type_id": GPU_4090, "count": 1, "datacenter": "MOON-1"}, "datacenter"),
        ("gpu_types", {"gpu_type_id": GPU_4090, "secure_price": 0}, "secure_price must be"),
        ("gpu_types", {"gpu_type_id": GPU_4090, "step_seconds": "fast"}, "could not convert"),
    ],
)
def test_bad_admin_calls_are_400_with_the_reason(
    runpod_emulator: RunPodEmulator, path: str, body: dict[str, Any], message: str
) -> None:
    answer = requests.post(f"{runpod_emulator.base_url}/_emulator/{path}", json=body, timeout=10)
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert EmulatorAdmin(runpod_emulator.base_url).gpu_types()[0]["free"]["EU-RO-1"] == 8


def test_reset_restores_prices_speeds_and_stock(runpod_emulator: RunPodEmulator) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    original = admin.gpu_types()
    admin.set_gpu_offer(GPU_4090, secure_price=5.0, step_seconds=1.0)
    admin.set_stock(GPU_4090, 0, seconds=60)
    admin.set_stock(GPU_A6000, 0, after_s=60)
    admin.reset()
    assert admin.gpu_types() == [{**t, "scheduled": []} for t in original]


# ---------------------------------------------------------------- the pod's stand-in speed


def comfy_argv(emulator: RunPodEmulator, pod_id: str) -> list[str]:
    (pod,) = [p for p in emulator.pods() if p["id"] == pod_id]
    for pid in pod["pids"]:
        argv = psutil.Process(pid).cmdline()
        if "rp_devstack.comfyui_standin" in argv:
            return argv
    raise AssertionError(f"no ComfyUI process on pod {pod_id}")


def test_the_stand_in_steps_at_the_pods_gpu_speed_unless_the_pod_env_says(
    runpod_emulator: RunPodEmulator, v2: Any
) -> None:
    runpod_emulator.set_gpu_offer(GPU_A6000, step_seconds=0.25)
    on_4090 = create_pod(runpod_emulator, v2, GPU_4090).json()["id"]
    on_a6000 = create_pod(runpod_emulator, v2, GPU_A6000).json()["id"]
    pinned = create_pod(runpod_emulator, v2, GPU_A6000, COMFY_STANDIN_STEP_SECONDS="0.001")
    steps = {
        pod_id: comfy_argv(runpod_emulator, pod_id)
        for pod_id in (on_4090, on_a6000, pinned.json()["id"])
    }
    speeds = [argv[argv.index("--step-seconds") + 1] for argv in steps.values()]
    assert speeds == ["0.02", "0.25", "0.001"]


def sampler_graph(steps: int) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["2", 0]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": steps, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple", "positive": ["3", 0], "negative": ["3", 0], "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "speed"}},
    }  # fmt: skip


def step_times(emulator: RunPodEmulator, pod_id: str, steps: int, token: str) -> list[float]:
    """Run a prompt of `steps` sampler steps through the pod's proxy; the steps' intervals."""
    deadline = time.monotonic() + 60
    while (pod := emulator.get_pod(pod_id)) is None or emulator.comfy_port(pod) is None:
        assert time.monotonic() < deadline, "pod never came up"
        time.sleep(0.1)
    url = f"http://127.0.0.1:{emulator.comfy_port(pod)}"
    auth = {"Authorization": f"Bearer {token}"}
    queued = requests.post(url + "/prompt", json={"prompt": sampler_graph(steps)}, headers=auth)
    assert queued.status_code == 200, queued.text
    meter = Path(emulator.state_dir) / "pods" / pod_id / "workspace" / "ComfyUI" / "gpu_meter.jsonl"
    while not meter.is_file() or len(meter.read_text().splitlines()) < steps:
        assert time.monotonic() < deadline, "the prompt never finished its steps"
        time.sleep(0.05)
    stamps = [json.loads(line)["t"] for line in meter.read_text().splitlines()]
    return [b - a for a, b in itertools.pairwise(stamps)]


@pytest.mark.slow  # two pods boot and render: several seconds
def test_a_prompt_takes_the_gpu_types_step_time(runpod_emulator: RunPodEmulator, v2: Any) -> None:
    runpod_emulator.set_gpu_offer(GPU_4090, step_seconds=0.02)
    runpod_emulator.set_gpu_offer(GPU_A6000, step_seconds=0.3)
    token = secrets.token_urlsafe(32)
    fast = create_pod(runpod_emulator, v2, GPU_4090, RP_POD_TOKEN=token, RP_POD_LEASE_S="0")
    slow = create_pod(runpod_emulator, v2, GPU_A6000, RP_POD_TOKEN=token, RP_POD_LEASE_S="0")
    fast_steps = step_times(runpod_emulator, fast.json()["id"], 6, token)
    slow_steps = step_times(runpod_emulator, slow.json()["id"], 6, token)
    assert min(slow_steps) >= 0.3
    assert min(fast_steps) >= 0.02
    assert statistics.median(fast_steps) < 0.3
