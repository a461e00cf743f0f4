"""The stand-in on its own: CLI process, fault knobs, other save nodes, a third-party client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket
from comfy_api_simplified import ComfyApiWrapper, ComfyWorkflowWrapper
from PIL import Image

from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.ports import free_port, wait_for_port
from rp_pipeline.integrations.comfyui.client import ComfyUIClient
from rp_pipeline.integrations.comfyui.errors import (
    ComfyUITimeout,
    PromptExecutionError,
    PromptValidationError,
)
from rp_pipeline.integrations.comfyui.results import OutputFile
from rp_pipeline.workflows import render_workflow

from .helpers import SMALL, mp4_facts, output_files, wait_until_running

# The shipped workflows, as a user exports them from ComfyUI.
API_DIR = Path(__file__).resolve().parents[2] / "workflows"


def video_graph(prefix: str = "video/clip", frames: int = 9, fps: float = 16.0) -> dict:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": frames, "color": 255}},
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": fps}},
        "3": {"class_type": "SaveVideo", "inputs": {"video": ["2", 0], "filename_prefix": prefix, "format": "auto", "codec": "auto"}},
    }  # fmt: skip


@pytest.fixture
def cli_standin(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """The CLI as local pods run it; indirect param: extra args ("{tmp}" is the test's temp
    dir) and env."""
    extra_args, extra_env = getattr(request, "param", ([], {}))
    extra_args = [arg.replace("{tmp}", str(tmp_path)) for arg in extra_args]
    port = free_port()
    output = tmp_path / "output"
    env = {**os.environ, **extra_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rp_devstack.comfyui_standin", "--port", str(port),
         "--output-dir", str(output), "--step-seconds", "0", *extra_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_for_port(port, "127.0.0.1", 30)
        yield f"http://127.0.0.1:{port}", output
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert f"127.0.0.1:{port}" in (proc.stdout.read() if proc.stdout else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_serves_and_writes_savevideo_outputs(cli_standin: tuple[str, Path]) -> None:
    url, output = cli_standin
    client = ComfyUIClient(url)
    assert client.is_ready()
    first = client.wait(client.submit(video_graph(frames=13, fps=8)).prompt_id, 60)
    second = client.wait(client.submit(video_graph(frames=5)).prompt_id, 60)
    assert [r.outputs[0].relative_path for r in (first, second)] == [
        "video/clip_00001_.mp4",
        "video/clip_00002_.mp4",
    ]
    facts = mp4_facts(output / "video/clip_00001_.mp4")
    assert facts == {"codec": "h264", "width": 64, "height": 48, "fps": 8, "frames": 13}
    assert output.parent.joinpath("input").is_dir()  # default input dir beside the output dir


@pytest.mark.parametrize("cli_standin", [([], {"COMFY_STANDIN_FAULT": "oom"})], indirect=True)
def test_cli_fault_from_env(cli_standin: tuple[str, Path]) -> None:
    url, output = cli_standin
    client = ComfyUIClient(url)
    with pytest.raises(PromptExecutionError) as info:
        client.wait(client.submit(video_graph()).prompt_id, 60)
    assert info.value.is_out_of_memory
    assert output_files(output) == set()


@pytest.mark.parametrize("cli_standin", [(["--missing-models"], {})], indirect=True)
def test_cli_missing_models(cli_standin: tuple[str, Path]) -> None:
    url, _ = cli_standin
    assert requests.get(url + "/models/diffusion_models", timeout=10).json() == []
    workflow = ComfyWorkflowWrapper(str(API_DIR / "wan22_t2v_14b.json"))
    with pytest.raises(PromptValidationError, match=r"Value not in list"):
        ComfyUIClient(url).submit(dict(workflow))


def test_cli_refuses_a_busy_port(tmp_path: Path) -> None:
    with ComfyStandin(tmp_path / "a") as running:
        result = subprocess.run(
            [sys.executable, "-m", "rp_devstack.comfyui_standin", "--port", str(running.port),
             "--output-dir", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


def test_vhs_video_combine_reports_gifs(standin: ComfyStandin, client: ComfyUIClient) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 7, "color": 0}},
        "2": {"class_type": "VHS_VideoCombine", "inputs": {
            "images": ["1", 0], "frame_rate": 10, "loop_count": 0, "filename_prefix": "vhs/clip",
            "format": "video/h264-mp4", "pingpong": False, "save_output": True}},
    }  # fmt: skip
    result = client.wait(client.submit(graph).prompt_id, 60)
    assert result.outputs == [OutputFile("2", "clip_00001.mp4", "vhs", "output", animated=True)]
    history = client.history(result.prompt_id)
    assert history is not None
    assert set(history["outputs"]["2"]) == {"gifs"}
    facts = mp4_facts(standin.output_dir / "vhs/clip_00001.mp4")
    assert (facts["frames"], facts["fps"]) == (7, 10)


def test_save_image_counters_and_previews(standin: ComfyStandin, client: ComfyUIClient) -> None:
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 2, "color": 65280}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "stills/img"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }  # fmt: skip
    result = client.wait(client.submit(graph).prompt_id, 60)
    assert [o.relative_path for o in result.outputs] == [
        "stills/img_00001_.png",
        "stills/img_00002_.png",
    ]  # previews (type temp) are not outputs
    assert all(not o.animated for o in result.outputs)
    with Image.open(standin.output_dir / "stills/img_00002_.png") as img:
        assert img.size == (16, 16) and img.getpixel((0, 0)) == (0, 255, 0)
        assert "prompt" in img.info


def test_link_type_mismatch_and_bad_values(client: ComfyUIClient) -> None:
    graph = video_graph()
    graph["3"]["inputs"]["video"] = ["1", 0]  # IMAGE into a VIDEO input
    graph["2"]["inputs"]["fps"] = 500.0
    with pytest.raises(PromptValidationError) as info:
        client.submit(graph)
    assert [(e.node_id, e.type) for e in info.value.node_errors] == [("3", "return_type_mismatch")]
    del graph["3"]
    with pytest.raises(PromptValidationError, match="Prompt has no outputs"):
        client.submit(graph)


def test_fault_knob_rejects_unknown_values(standin: ComfyStandin) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        standin.fault = "meltdown"


def test_third_party_client_comfy_api_simplified(standin: ComfyStandin, tmp_path: Path) -> None:
    """comfy-api-simplified (PyPI), unmodified, drives the stand-in end to end."""
    api = ComfyApiWrapper(standin.base_url)
    assert api.get_system_stats()["system"]["comfyui_version"]
    assert "SaveVideo" in api.get_object_info()
    assert list(api.get_object_info("KSamplerAdvanced")) == ["KSamplerAdvanced"]
    assert api.get_embeddings() == []
    assert api.get_queue() == {"queue_running": [], "queue_pending": []}

    image = tmp_path / "start.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(image)
    uploaded = api.upload_image(image)
    assert uploaded == {"name": "start.png", "subfolder": "default_upload_folder", "type": "input"}

    workflow = ComfyWorkflowWrapper(str(API_DIR / "wan22_i2v_14b_lightx2v.json"))
    workflow.set_node_param("CLIP Text Encode (Positive Prompt)", "text", "a red fox")
    workflow.set_node_param("Load Image", "image", "default_upload_folder/start.png")
    workflow.set_node_param("WanImageToVideo", "width", 96)
    workflow.set_node_param("WanImageToVideo", "height", 64)
    workflow.set_node_param("WanImageToVideo", "length", 9)
    workflow.set_node_param("Save Video", "filename_prefix", "video/third_party")
    files = api.queue_and_wait_images(workflow, "Save Video")
    assert list(files) == ["third_party_00001_.mp4"]
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(files["third_party_00001_.mp4"])
    facts = mp4_facts(downloaded)
    assert (facts["width"], facts["height"], facts["frames"]) == (96, 64, 9)
    api.interrupt()  # idle interrupt answers 200


def test_outputs_are_written_in_place_like_comfyui(
    standin: ComfyStandin, client: ComfyUIClient
) -> None:
    """No temp file + rename: watchers see the final name created, growing, then closed."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    events: list[FileSystemEvent] = []

    class Record(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            events.append(event)

    (standin.output_dir / "video").mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(Record(), str(standin.output_dir), recursive=True)
    observer.start()
    try:
        rendered = render_workflow(
            "wan22_t2v_14b",
            {
                "prompt": "x",
                "width": 640,
                "height": 352,
                "frames": 49,
                "filename_prefix": "video/inplace",
            },
        )
        result = client.wait(client.submit(rendered.api_json).prompt_id, 60)
    finally:
        observer.stop()
        observer.join()
    final = str(standin.output_dir / result.outputs[0].relative_path)
    kinds = [(e.event_type, e.src_path) for e in events if not e.is_directory]
    assert ("created", final) in kinds
    assert kinds.count(("modified", final)) >= 2  # grew in several writes
    assert ("closed", final) in kinds
    assert not [e for e in events if e.event_type == "moved"]
    assert {path for _, path in kinds} == {final}


def t2v(prompt: str, **extra: object) -> dict:
    params = {"prompt": prompt, **SMALL, "steps": 4, **extra}
    return render_workflow("wan22_t2v_14b", params).api_json


def test_fault_markers_fail_only_their_own_prompt(
    standin: ComfyStandin, client: ComfyUIClient
) -> None:
    """One batch mixing healthy prompts and prompts marked [[fail]] / [[oom]] (in the positive
    text, or in any other string input such as the negative text)."""
    texts = {
        "ok1": {"prompt": "a fox"},
        "fail": {"prompt": "a fox [[fail]]"},
        "oom": {"prompt": "a fox [[oom]]"},
        "neg": {"prompt": "a fox", "negative_prompt": "blurry [[fail]]"},
        "ok2": {"prompt": "a cat"},
    }
    subs = {
        name: client.submit(t2v(**params, filename_prefix=f"video/{name}"))
        for name, params in texts.items()
    }
    errors = {}
    for name in ("fail", "oom", "neg"):
        with pytest.raises(PromptExecutionError) as info:
            client.wait(subs[name].prompt_id, 60)
        errors[name] = info.value
    # Every fault fires at the first sampler (node 81, the high-noise KSamplerAdvanced).
    assert {(e.node_id, e.class_type) for e in errors.values()} == {("81", "KSamplerAdvanced")}
    assert [errors[n].exception_type for n in ("fail", "oom", "neg")] == [
        "RuntimeError", "torch.OutOfMemoryError", "RuntimeError"
    ]  # fmt: skip
    assert [errors[n].is_out_of_memory for n in ("fail", "oom", "neg")] == [False, True, False]
    assert "This error means you ran out of memory on your GPU" in errors["oom"].message
    assert [client.wait(subs[n].prompt_id, 60).status for n in ("ok1", "ok2")] == ["success"] * 2
    assert output_files(standin.output_dir) == {
        "video/ok1_00001_.mp4",
        "video/ok2_00001_.mp4",
    }


def test_hang_marker_hangs_at_the_sampler_until_interrupted(
    standin: ComfyStandin, client: ComfyUIClient
) -> None:
    hung = client.submit(t2v("a fox [[hang]]"))
    after = client.submit(t2v("a cat", filename_prefix="video/after"))
    wait_until_running(client, hung.prompt_id)
    with pytest.raises(ComfyUITimeout):
        client.wait(hung.prompt_id, 0.3)
    assert client.queue()["queue_running"][0][1] == hung.prompt_id  # still hanging
    client.interrupt(hung.prompt_id)
    assert client.wait(hung.prompt_id, 30).status == "interrupted"
    history = client.history(hung.prompt_id)
    assert history is not None
    event, data = history["status"]["messages"][-1]
    assert (event, data["node_id"], data["node_type"]) == (
        "execution_interrupted", "81", "KSamplerAdvanced"
    )  # fmt: skip
    # The queue moves on: the next prompt runs normally.
    assert client.wait(after.prompt_id, 60).outputs[0].filename == "after_00001_.mp4"


def test_global_fault_knob_applies_to_unmarked_prompts(
    standin: ComfyStandin, client: ComfyUIClient
) -> None:
    """The global knob still applies to unmarked prompts; a marker picks its own fault."""
    standin.fault = "oom"
    with pytest.raises(PromptExecutionError) as plain:
        client.wait(client.submit(t2v("a fox")).prompt_id, 60)
    with pytest.raises(PromptExecutionError) as marked:
        client.wait(client.submit(t2v("a fox [[fail]]")).prompt_id, 60)
    assert (plain.value.exception_type, marked.value.exception_type) == (
        "torch.OutOfMemoryError", "RuntimeError"
    )  # fmt: skip


def test_savevideo_codec_is_checked_when_the_node_runs(client: ComfyUIClient) -> None:
    graph = video_graph()
    graph["3"]["inputs"]["codec"] = "vp9"
    submission = client.submit(graph)  # no validation error, as on the real server
    with pytest.raises(PromptExecutionError) as info:
        client.wait(submission.prompt_id, 60)
    assert (info.value.class_type, info.value.exception_type) == ("SaveVideo", "ValueError")


def test_prompt_without_client_id_tells_no_socket_it_ran(standin: ComfyStandin) -> None:
    """As in ComfyUI's code: without a client id, node and execution events go nowhere (only
    the progress ticks and `status` are broadcast), so the only way to the result is /history."""
    ws = websocket.create_connection(standin.base_url.replace("http", "ws") + "/ws", timeout=30)
    try:
        ws.recv()  # the connect status
        body = {"prompt": t2v("a fox")}
        prompt_id = requests.post(standin.base_url + "/prompt", json=body, timeout=10).json()[
            "prompt_id"
        ]
        heard = []
        while True:  # the last status (queue empty) comes after the prompt's last event
            message = json.loads(ws.recv())
            heard.append(message["type"])
            if (
                message["type"] == "status"
                and message["data"]["status"]["exec_info"]["queue_remaining"] == 0
            ):
                break
    finally:
        ws.close()
    assert ComfyUIClient(standin.base_url).wait(prompt_id, 60).status == "success"
    assert "progress" in heard
    assert set(heard) <= {"status", "progress", "progress_state"}


@pytest.mark.parametrize("cli_standin", [(["--gpu-meter", "{tmp}/meter.jsonl"], {})], indirect=True)
def test_gpu_meter_counts_every_sampler_step_of_each_prompt(
    cli_standin: tuple[str, Path],
) -> None:
    """Benchmarks count a pod's GPU work from this file: one line per sampler step, written as
    the step ends, naming the prompt and what it renders."""
    url, output = cli_standin
    client = ComfyUIClient(url)
    first = client.submit(t2v("a fox", filename_prefix="video/meter-a"))
    second = client.submit(t2v("a cat", filename_prefix="video/meter-b"))
    for sub in (first, second):
        client.wait(sub.prompt_id, 60)
    lines = [json.loads(line) for line in (output.parent / "meter.jsonl").read_text().splitlines()]
    for sub, prefix in ((first, "video/meter-a"), (second, "video/meter-b")):
        mine = [line for line in lines if line["prompt_id"] == sub.prompt_id]
        assert mine and all(line["prefixes"] == [prefix] for line in mine)
        # Each sampler of the graph counts 1..steps in order.
        runs = [line["step"] for line in mine]
        ends = [i for i, line in enumerate(mine) if line["step"] == line["steps"]]
        assert runs[0] == 1 and ends[-1] == len(mine) - 1
        assert sum(line["steps"] for line in mine if line["step"] == line["steps"]) == len(mine)
