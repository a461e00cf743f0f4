"""ComfyUIClient against the stand-in over real HTTP and WebSocket."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from PIL import Image

from rp_devstack.comfyui_standin import ComfyStandin
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.errors import (
    ComfyUIError,
    ComfyUITimeout,
    PromptExecutionError,
    PromptValidationError,
    PromptVanished,
)
from rp_pipeline.integrations.comfyui.results import OutputFile
from rp_pipeline.workflows import render_workflow

from .helpers import SMALL, mp4_facts, output_files, wait_until_running


def t2v(**extra: object) -> dict:
    return render_workflow("wan22_t2v_14b", {"prompt": "a fox in snow", **SMALL, **extra}).api_json


def test_full_t2v_run_with_progress(client: ComfyUIClient, standin: ComfyStandin) -> None:
    assert client.is_ready()
    rendered = render_workflow(
        "wan22_t2v_14b", {"prompt": "a fox", **SMALL, "steps": 6}, request_id="req-1"
    )
    submission = client.submit(rendered.api_json)
    progress: list[tuple[str, str, int, int]] = []
    result = client.wait(submission.prompt_id, 60, on_progress=lambda *a: progress.append(a))

    assert result.status == "success"
    assert result.outputs == [
        OutputFile("80", "req-1_00001_.mp4", "video/wan22_t2v_14b", "output", animated=True)
    ]
    # Two KSamplerAdvanced nodes: 3 steps each (6 split 3/3), one callback per step.
    assert [(n, v, m) for _, n, v, m in progress] == [
        ("81", 1, 3), ("81", 2, 3), ("81", 3, 3), ("78", 1, 3), ("78", 2, 3), ("78", 3, 3)
    ]  # fmt: skip
    assert {p[0] for p in progress} == {submission.prompt_id}
    assert result.started_at and result.finished_at and result.generation_time_s is not None
    assert result.generation_time_s == pytest.approx(result.finished_at - result.started_at)
    assert result.cached_nodes == []

    facts = mp4_facts(standin.output_dir / result.outputs[0].relative_path)
    assert facts == {"codec": "h264", "width": 160, "height": 96, "fps": 12, "frames": 17}
    downloaded = client.download(result.outputs[0], standin.output_dir.parent / "dl")
    assert (
        downloaded.read_bytes()
        == (standin.output_dir / result.outputs[0].relative_path).read_bytes()
    )


def test_socket_drop_reconnects_and_finishes(client: ComfyUIClient, standin: ComfyStandin) -> None:
    standin.server.executor.step_seconds = 0.03
    submission = client.submit(t2v(steps=20))
    dropped = threading.Event()

    def on_progress(prompt_id: str, node: str, value: int, max_: int) -> None:
        if value == 2 and not dropped.is_set():
            dropped.set()
            standin.drop_websockets()

    result = client.wait(submission.prompt_id, 60, on_progress=on_progress)
    assert dropped.is_set()
    assert result.status == "success"
    assert standin.server.ws_connections[client.client_id] >= 2
    assert mp4_facts(standin.output_dir / result.outputs[0].relative_path)["frames"] == 17


def test_socket_drop_without_reconnect_falls_back_to_history(
    client: ComfyUIClient, standin: ComfyStandin
) -> None:
    standin.server.executor.step_seconds = 0.03
    submission = client.submit(t2v(steps=20))
    progress: list[int] = []

    def on_progress(prompt_id: str, node: str, value: int, max_: int) -> None:
        progress.append(value)
        if len(progress) == 2:
            standin.websocket_enabled = False  # the reconnect will be refused
            standin.drop_websockets()

    result = client.wait(submission.prompt_id, 60, on_progress=on_progress)
    assert result.status == "success"
    assert len(progress) < 20  # the rest of the run was followed through /history only
    assert standin.server.ws_connections[client.client_id] == 1
    assert result.outputs[0].filename.endswith("_00001_.mp4")


def test_websocket_unavailable_polls_history(client: ComfyUIClient, standin: ComfyStandin) -> None:
    standin.websocket_enabled = False
    submission = client.submit(t2v())
    result = client.wait(submission.prompt_id, 60)
    assert result.status == "success"
    assert client.client_id not in standin.server.ws_connections


def test_validation_error_names_each_node(client: ComfyUIClient, standin: ComfyStandin) -> None:
    workflow = t2v()
    workflow["75"]["inputs"]["unet_name"] = "missing_model.safetensors"
    del workflow["74"]["inputs"]["width"]
    with pytest.raises(PromptValidationError) as info:
        client.submit(workflow)
    errors = {(e.node_id, e.class_type, e.type) for e in info.value.node_errors}
    assert errors == {
        ("75", "UNETLoader", "value_not_in_list"),
        ("74", "EmptyHunyuanLatentVideo", "required_input_missing"),
    }
    assert "node 75 (UNETLoader)" in str(info.value)
    assert "missing_model.safetensors" in str(info.value)


def test_missing_models_pod_rejects_shipped_workflow(tmp_path: Path) -> None:
    with (
        ComfyStandin(tmp_path / "out", models={}) as bare,
        pytest.raises(PromptValidationError) as info,
    ):
        ComfyUIClient(bare.base_url).submit(t2v())
    classes = {e.class_type for e in info.value.node_errors}
    assert classes == {"UNETLoader", "CLIPLoader", "VAELoader"}
    assert all(e.type == "value_not_in_list" for e in info.value.node_errors)


def test_unknown_node_and_no_outputs(client: ComfyUIClient) -> None:
    with pytest.raises(PromptValidationError, match="NoSuchNode does not exist"):
        client.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    with pytest.raises(PromptValidationError, match="prompt_no_outputs"):
        client.submit({"1": {"class_type": "EmptyImage", "inputs": {}}})


def test_malformed_request_is_a_clear_error(standin: ComfyStandin) -> None:
    response = requests.post(standin.base_url + "/prompt", data=b"{not json", timeout=10)
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("fault", "exception_type"),
    [("execution_error", "RuntimeError"), ("oom", "torch.OutOfMemoryError")],
)
def test_execution_errors(
    client: ComfyUIClient, standin: ComfyStandin, fault: str, exception_type: str
) -> None:
    standin.fault = fault
    submission = client.submit(t2v())
    with pytest.raises(PromptExecutionError) as info:
        client.wait(submission.prompt_id, 60)
    err = info.value
    assert (err.node_id, err.class_type, err.exception_type) == (
        "81",
        "KSamplerAdvanced",
        exception_type,
    )
    assert err.is_out_of_memory is (fault == "oom")
    assert "node 81 (KSamplerAdvanced)" in str(err)
    history = client.history(submission.prompt_id)
    assert history is not None
    assert history["status"]["status_str"] == "error"
    assert history["status"]["completed"] is False


def test_interrupt_a_hung_prompt(client: ComfyUIClient, standin: ComfyStandin) -> None:
    standin.fault = "hang"
    submission = client.submit(t2v())
    wait_until_running(client, submission.prompt_id)
    with pytest.raises(ComfyUITimeout) as timeout:
        client.wait(submission.prompt_id, 0.5)
    assert timeout.value.prompt_id == submission.prompt_id
    assert submission.prompt_id in str(timeout.value)
    client.interrupt()
    result = client.wait(submission.prompt_id, 30)
    assert result.status == "interrupted"
    assert result.outputs == []
    assert not list((standin.output_dir).rglob("*.mp4"))

    standin.fault = None  # the server is usable again
    again = client.wait(client.submit(t2v(seed=5)).prompt_id, 60)
    assert again.status == "success"


def test_cached_prompt_reports_old_files_and_writes_nothing(
    client: ComfyUIClient, standin: ComfyStandin
) -> None:
    workflow = t2v(seed=1234, filename_prefix="video/cache_test")
    first = client.wait(client.submit(workflow).prompt_id, 60)
    files_after_first = output_files(standin.output_dir)
    assert (first.cached, first.no_new_output) == (False, False)
    assert first.new_outputs == first.outputs

    second_sub = client.submit(workflow)
    second = client.wait(second_sub.prompt_id, 60)
    # ComfyUI says "success" with the old file: the result must say it is a cache answer.
    assert second.status == "success"
    assert (second.cached, second.no_new_output, second.new_outputs) == (True, True, [])
    assert second.outputs == [replace(out, cached=True) for out in first.outputs]
    assert set(second.cached_nodes) == set(workflow)
    assert output_files(standin.output_dir) == files_after_first

    # A fresh prefix re-runs only the save node and produces a new file.
    third = client.wait(
        client.submit(t2v(seed=1234, filename_prefix="video/cache_b")).prompt_id, 60
    )
    assert third.outputs[0].filename == "cache_b_00001_.mp4"
    assert set(third.cached_nodes) == set(workflow) - {"80"}
    assert (third.cached, third.new_outputs) == (False, third.outputs)


def test_concurrent_clients_each_follow_their_own_prompt(standin: ComfyStandin) -> None:
    clients = [ComfyUIClient(standin.base_url, client_id=f"client-{i}") for i in range(2)]
    subs = [c.submit(t2v(seed=i, steps=4)) for i, c in enumerate(clients)]
    heard: list[set[str]] = [set(), set()]
    for c, sub, seen in zip(clients, subs, heard, strict=True):
        with c:
            result = c.wait(sub.prompt_id, 60, on_progress=lambda p, n, v, m, s=seen: s.add(p))
        assert result.status == "success"
    assert heard == [{subs[0].prompt_id}, {subs[1].prompt_id}]


def test_batch_submit_then_wait_one_by_one(client: ComfyUIClient, standin: ComfyStandin) -> None:
    subs = [client.submit(t2v(seed=i, filename_prefix=f"video/batch_{i}")) for i in range(3)]
    results = [client.wait(s.prompt_id, 60) for s in subs]
    assert [r.outputs[0].filename for r in results] == [f"batch_{i}_00001_.mp4" for i in range(3)]
    assert [s.number for s in subs] == sorted(s.number for s in subs)


def test_upload_image_and_run_i2v(
    client: ComfyUIClient, standin: ComfyStandin, tmp_path: Path
) -> None:
    source = tmp_path / "start frame.png"
    Image.new("RGB", (64, 64), (0, 0, 255)).save(source)
    name = client.upload_image(source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert name == f"rp_inputs/{digest[:16]}.png"
    assert (standin.input_dir / name).read_bytes() == source.read_bytes()
    rendered = render_workflow(
        "wan22_i2v_14b_lightx2v", {"prompt": "the fox turns", "input_image": name, **SMALL}
    )
    result = client.wait(client.submit(rendered.api_json).prompt_id, 60)
    facts = mp4_facts(standin.output_dir / result.outputs[0].relative_path)
    assert (facts["width"], facts["height"], facts["frames"]) == (160, 96, 17)


def test_i2v_with_image_missing_on_the_server(client: ComfyUIClient) -> None:
    rendered = render_workflow("wan22_i2v_14b_lightx2v", {"prompt": "x", "input_image": "nope.png"})
    with pytest.raises(PromptValidationError, match=r"Invalid image file: nope\.png"):
        client.submit(rendered.api_json)


@pytest.mark.parametrize(
    ("filename", "subfolder"),
    [("../secret.txt", ""), ("a/b.mp4", ""), ("x.mp4", "../.."), ("x.mp4", "/etc"), ("..", "")],
)
def test_download_refuses_traversal(
    client: ComfyUIClient, tmp_path: Path, filename: str, subfolder: str
) -> None:
    dest = tmp_path / "downloads"
    dest.mkdir()
    with pytest.raises(ComfyUIError, match="unsafe"):
        client.download(OutputFile("1", filename, subfolder, "output"), dest)
    assert list(dest.iterdir()) == []


def test_view_rejects_traversal_on_the_server(standin: ComfyStandin) -> None:
    (standin.output_dir.parent / "secret.txt").write_text("no")
    for params in (
        {"filename": "../secret.txt"},
        {"filename": "secret.txt", "subfolder": ".."},
    ):
        response = requests.get(standin.base_url + "/view", params=params, timeout=10)
        assert response.status_code in (400, 403, 404)
        assert response.content != b"no"


def test_unreachable_server(tmp_path: Path) -> None:
    from rp_devstack.ports import free_port

    dead = ComfyUIClient(f"http://127.0.0.1:{free_port()}", request_timeout_s=2)
    assert dead.is_ready() is False
    with pytest.raises(ComfyUIError, match="cannot reach ComfyUI"):
        dead.submit({})


def test_dagster_resource_hands_out_configured_clients(standin: ComfyStandin) -> None:
    from rp_pipeline.integrations.comfyui.resource import ComfyUIResource

    resource = ComfyUIResource(poll_interval_s=0.5, request_timeout_s=5, unreachable_grace_s=7)
    client = resource.get_client(standin.base_url, client_id="run-1")
    assert (client.client_id, client.poll_interval_s, client.request_timeout_s) == ("run-1", 0.5, 5)
    assert client.unreachable_grace_s == 7
    assert client.is_ready()
    assert resource.uses_external_comfyui is False
    with pytest.raises(ValueError, match="no ComfyUI URL"):
        resource.get_client()


def test_wait_rides_out_proxy_524s(client: ComfyUIClient, standin: ComfyStandin) -> None:
    standin.websocket_enabled = False
    standin.server.history_524_remaining = 3
    result = client.wait(client.submit(t2v()).prompt_id, 60)
    assert result.status == "success"
    assert standin.server.history_524_remaining == 0


def prompt_on_a_dead_server(tmp_path: Path, grace_s: float) -> tuple[ComfyUIClient, str]:
    """A client whose prompt was running when its server died (the pod went mid-prompt)."""
    standin = ComfyStandin(tmp_path / "out", step_seconds=0.05)
    standin.fault = "hang"
    standin.start()
    client = ComfyUIClient(standin.base_url, poll_interval_s=0.1, unreachable_grace_s=grace_s)
    submission = client.submit(t2v())
    standin.stop()
    return client, submission.prompt_id


def test_wait_gives_up_when_comfyui_stays_gone(tmp_path: Path) -> None:
    from rp_pipeline.integrations.comfyui.errors import ComfyUIUnavailable

    client, prompt_id = prompt_on_a_dead_server(tmp_path, grace_s=0.5)
    with pytest.raises(ComfyUIUnavailable, match="cannot reach ComfyUI"):
        client.wait(prompt_id, 60)


def test_wait_asks_its_caller_at_each_failed_try_within_the_grace(tmp_path: Path) -> None:
    """A caller that can tell the server is gone for good (RunPod says the pod was taken back)
    ends the wait from the hook, long before the grace is over."""
    from rp_pipeline.integrations.comfyui.errors import ComfyUIUnavailable

    client, prompt_id = prompt_on_a_dead_server(tmp_path, grace_s=3600)
    seen: list[ComfyUIUnavailable] = []

    class PodGone(Exception):
        pass

    def on_outage(error: ComfyUIUnavailable) -> None:
        seen.append(error)
        if len(seen) == 3:
            raise PodGone("RunPod reports the pod EXITED")

    with pytest.raises(PodGone):
        client.wait(prompt_id, 600, on_outage=on_outage)
    assert len(seen) == 3 and all("cannot reach ComfyUI" in str(e) for e in seen)
    # The hook belongs to that one wait: a later wait without it rides out outages again.
    assert client._on_outage is None


def test_wait_notices_a_prompt_comfyui_forgot(standin: ComfyStandin) -> None:
    client = ComfyUIClient(standin.base_url, poll_interval_s=0.1, queue_check_s=0.2)
    standin.fault = "hang"
    running = client.submit(t2v(seed=1))
    pending = client.submit(t2v(seed=2))
    wait_until_running(client, running.prompt_id)
    response = requests.post(
        standin.base_url + "/queue", json={"delete": [pending.prompt_id]}, timeout=10
    )
    assert response.status_code == 200
    with pytest.raises(PromptVanished, match="neither queued nor finished") as vanished:
        client.wait(pending.prompt_id, 30)
    assert vanished.value.prompt_id == pending.prompt_id
    assert isinstance(vanished.value, ComfyUIError)
    client.interrupt()
    assert client.wait(running.prompt_id, 30).status == "interrupted"


@pytest.mark.parametrize(
    ("name", "size", "with_image"),
    [
        ("wan22_t2v_14b", (160, 96), False),
        ("wan22_i2v_14b_lightx2v", (96, 160), True),
        ("wan22_ti2v_5b", (192, 96), False),
        ("wan22_ti2v_5b", (128, 64), True),
    ],
)
def test_every_shipped_workflow_runs_on_a_default_standin(
    client: ComfyUIClient,
    standin: ComfyStandin,
    tmp_path: Path,
    name: str,
    size: tuple[int, int],
    with_image: bool,
) -> None:
    params: dict = {"prompt": "a fox", "width": size[0], "height": size[1], "frames": 9, "fps": 10}
    if with_image:
        image = tmp_path / "start.png"
        Image.new("RGB", size, (10, 20, 30)).save(image)
        params["input_image"] = client.upload_image(image)
    rendered = render_workflow(name, params, request_id=f"{name}-{with_image}")
    result = client.wait(client.submit(rendered.api_json).prompt_id, 60)
    assert [o.node_id for o in result.outputs] == rendered.output_node_ids
    facts = mp4_facts(standin.output_dir / result.outputs[0].relative_path)
    assert facts == {"codec": "h264", "width": size[0], "height": size[1], "fps": 10, "frames": 9}


def test_one_client_waits_for_its_batch_with_every_progress_event(
    client: ComfyUIClient, standin: ComfyStandin
) -> None:
    """The fleet's pattern: submit N prompts, then wait() for each in turn on the same client.
    The socket stays open between waits, so even events sent in between are delivered."""
    subs = [client.submit(t2v(seed=i, steps=4, filename_prefix=f"video/seq_{i}")) for i in range(3)]
    progress: dict[str, list[tuple[str, int, int]]] = {s.prompt_id: [] for s in subs}
    results = []
    for sub in subs:
        results.append(
            client.wait(
                sub.prompt_id, 60, on_progress=lambda p, n, v, m: progress[p].append((n, v, m))
            )
        )
        time.sleep(0.05)  # the caller doing other work while the next prompt runs
    client.close()
    assert [r.status for r in results] == ["success"] * 3
    assert [r.outputs[0].filename for r in results] == [f"seq_{i}_00001_.mp4" for i in range(3)]
    steps = [("81", 1, 2), ("81", 2, 2), ("78", 1, 2), ("78", 2, 2)]
    assert all(progress[s.prompt_id] == steps for s in subs), progress
    assert standin.server.ws_connections[client.client_id] == 1


def test_another_client_id_hears_nothing_but_history_still_answers(
    client: ComfyUIClient, standin: ComfyStandin
) -> None:
    submission = client.submit(t2v(steps=4))
    with ComfyUIClient(standin.base_url, poll_interval_s=0.1) as stranger:
        heard: list[tuple[str, str, int, int]] = []
        result = stranger.wait(submission.prompt_id, 60, on_progress=lambda *a: heard.append(a))
    assert result.status == "success"
    assert heard == []  # only the submitting client id gets a prompt's events


def test_savevideo_format_is_refused_when_the_node_runs(
    client: ComfyUIClient, standin: ComfyStandin
) -> None:
    workflow = t2v()
    workflow["80"]["inputs"]["format"] = "webm"
    submission = client.submit(workflow)  # accepted, as the real server does
    with pytest.raises(PromptExecutionError) as info:
        client.wait(submission.prompt_id, 60)
    assert (info.value.node_id, info.value.class_type) == ("80", "SaveVideo")
    assert info.value.exception_type == "ValueError"
    assert info.value.message == "'webm' is not a valid VideoContainer"
    assert not list(standin.output_dir.rglob("*.mp4"))


def test_external_comfyui_setting(standin: ComfyStandin) -> None:
    from rp_pipeline.integrations.comfyui.resource import ComfyUIResource

    resource = ComfyUIResource(external_url=standin.base_url, external_token="ext-token")
    assert resource.uses_external_comfyui is True
    external = resource.get_client(client_id="me")
    assert (external.base_url, external.client_id) == (standin.base_url, "me")
    assert external.session.headers["Authorization"] == "Bearer ext-token"
    assert external.wait(external.submit(t2v()).prompt_id).status == "success"
    # A pod's URL gets the pod's token (or none), never the external server's.
    pod = resource.get_client("http://127.0.0.1:1", token=None)
    assert "Authorization" not in pod.session.headers
    assert (
        resource.get_client("http://127.0.0.1:1", token="pod").session.headers["Authorization"]
        == "Bearer pod"
    )
