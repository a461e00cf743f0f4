"""Runs one queued prompt the way ComfyUI's PromptExecutor does, minus the neural networks.

It walks the graph in dependency order, reuses cached node results (a node whose class, inputs
and upstream signatures equal the previous prompt's is not re-run; cached output nodes re-send
their old `executed` payload), sends the recorded WebSocket event sequence, ticks `progress` once
per sampler step (sleeping `step_seconds`), writes real files for the save nodes and builds the
history entry. Nodes without a handler of their own (any node of the catalogue, custom nodes
from a snapshot included) pass inputs through to outputs of the same declared type
(`pass_through`).

GPU meter (benchmarks): with `gpu_meter` set, every sampler step appends one JSON line
`{"t", "prompt_id", "step", "steps", "prefixes"}` to that file, written at once, so the GPU work of
a pod killed mid-prompt (a preempted spot pod) can still be counted step by step afterwards.
`prefixes` are the prompt's save nodes' `filename_prefix` values, naming what it renders.

Faults, for the fault suite and the fleet tests. Each fires once per prompt, at the first sampler
node (KSampler, KSamplerAdvanced) that runs; when no sampler runs (none in the graph, or its
result is cached) at the first node that runs; a prompt answered entirely from cache runs nothing
and so never faults.

- Per prompt: a marker anywhere in a string input of the prompt (normally the positive
  CLIPTextEncode text, e.g. "a fox [[fail]]") picks that prompt's fault, so one batch can mix
  healthy and failing prompts:
  `[[fail]]` -> `execution_error` (RuntimeError) at the sampler;
  `[[oom]]`  -> `execution_error` shaped like the real server's out-of-memory report
               (`exception_type` "torch.OutOfMemoryError", ComfyUI's OOM tips in the message);
  `[[hang]]` -> the sampler hangs until `POST /interrupt`, then `execution_interrupted`.
- Globally: `Executor.fault` (`ComfyStandin.fault`, `--fault`, env `COMFY_STANDIN_FAULT`) set to
  "execution_error", "oom" or "hang" applies to every prompt without a marker.
"""

from __future__ import annotations

import json
import logging
import random
import string
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from rp_agent.clock import wall as pod_clock
from rp_devstack.comfyui_standin.media import (
    Frames,
    Latent,
    Video,
    save_path,
    vhs_counter,
    write_mp4,
    write_png,
)

log = logging.getLogger(__name__)

FAULTS = ("execution_error", "oom", "hang")
# Per-prompt fault markers (in any string input of the prompt) -> the fault they inject.
MARKERS = {"[[fail]]": "execution_error", "[[oom]]": "oom", "[[hang]]": "hang"}
SAMPLERS = {"KSampler", "KSamplerAdvanced"}
# SaveVideo's `format` / `codec` values, as ComfyUI's VideoContainer / VideoCodec enums know them.
VIDEO_CONTAINERS = ("auto", "mp4")
VIDEO_CODECS = ("auto", "h264")

OOM_MESSAGE = (
    "Allocation on device \nThis error means you ran out of memory on your GPU.\n\n"
    "TIPS: If the workflow worked before you might have accidentally set the batch_size to a "
    "large number."
)

Send = Callable[[str, dict[str, Any], "str | None"], None]


class Interrupted(Exception):
    pass


class InjectedFault(Exception):
    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


@dataclass
class RunState:
    item: QueueItem
    client_id: str | None
    messages: list[list[Any]] = field(default_factory=list)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    fault: str | None = None
    # Where the fault fires: the first sampler that runs, else the first node that runs.
    fault_at_sampler: bool = False
    fault_fired: bool = False


class Executor:
    """Executes prompts; owned by the server's single worker thread."""

    def __init__(
        self,
        output_dir: Path,
        input_dir: Path,
        temp_dir: Path,
        catalogue: Callable[[], dict[str, Any]],
        send: Send,
        step_seconds: float,
        gpu_meter: Path | None = None,
    ) -> None:
        self.output_dir = output_dir
        self.input_dir = input_dir
        self.temp_dir = temp_dir
        self.catalogue = catalogue
        self.send = send
        self.step_seconds = step_seconds
        self.gpu_meter = gpu_meter
        self.fault: str | None = None
        self.interrupt_flag = threading.Event()
        self.cache: dict[Any, CacheEntry] = {}
        self.current_node: str | None = None

    # --- public ------------------------------------------------------------------------
    def execute(self, item: QueueItem) -> dict[str, Any]:
        """Run a prompt; returns its history entry (without the `prompt` field)."""
        self.interrupt_flag.clear()  # ComfyUI clears a stale interrupt when a prompt starts
        run = RunState(item, item.extra_data.get("client_id"))
        prompt = item.prompt
        signatures = {node_id: self._signature(prompt, node_id, {}) for node_id in prompt}
        # Classic cache: only results of the previous prompt's nodes survive.
        self.cache = {sig: e for sig, e in self.cache.items() if sig in signatures.values()}
        order = self._execution_order(prompt, item.outputs_to_execute)
        cached = [n for n in order if signatures[n] in self.cache]
        run.fault = prompt_fault(prompt) or self.fault
        run.fault_at_sampler = any(
            prompt[n]["class_type"] in SAMPLERS for n in order if n not in cached
        )
        self._message(run, "execution_start", {"prompt_id": item.prompt_id})
        self._message(run, "execution_cached", {"nodes": cached, "prompt_id": item.prompt_id})
        results: dict[str, tuple[Any, ...]] = {}
        status = "success"
        try:
            for node_id in order:
                sig = signatures[node_id]
                entry = self.cache.get(sig)
                if entry is not None:
                    results[node_id] = entry.outputs
                    if entry.ui is not None:
                        self._report_cached_output(run, node_id, entry.ui)
                    continue
                self._run_node(run, node_id, results)
                self.cache[sig] = CacheEntry(results[node_id], run.ui_outputs.get(node_id))
            self._message(run, "execution_success", {"prompt_id": item.prompt_id})
        except Interrupted:
            status = "error"
            node_id = self.current_node or ""
            self._message(
                run,
                "execution_interrupted",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": node_id,
                    "node_type": prompt.get(node_id, {}).get("class_type", ""),
                    "executed": list(run.executed),
                },
                broadcast=True,
            )
        except Exception as ex:  # a node failed: report it as ComfyUI's execution_error
            status = "error"
            node_id = self.current_node or ""
            node = prompt.get(node_id, {})
            exception_type = (
                ex.exception_type if isinstance(ex, InjectedFault) else type(ex).__name__
            )
            log.info("prompt %s failed at node %s: %s", item.prompt_id, node_id, ex)
            self._message(
                run,
                "execution_error",
                {
                    "prompt_id": item.prompt_id,
                    "node_id": node_id,
                    "node_type": node.get("class_type", ""),
                    "executed": list(run.executed),
                    "exception_message": str(ex),
                    "exception_type": exception_type,
                    "traceback": traceback.format_tb(ex.__traceback__),
                    "current_inputs": {k: [repr(v)] for k, v in node.get("inputs", {}).items()},
                    "current_outputs": list(item.outputs_to_execute),
                },
            )
        finally:
            self.current_node = None
        return {
            "outputs": run.ui_outputs,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": run.messages,
            },
            "meta": run.meta,
        }

    # --- graph -------------------------------------------------------------------------
    def _signature(self, prompt: dict[str, Any], node_id: str, memo: dict[str, Any]) -> Any:
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        parts: list[tuple[str, Any]] = []
        for name in sorted(node.get("inputs", {})):
            val = node["inputs"][name]
            if isinstance(val, list) and len(val) == 2 and val[0] in prompt:
                parts.append((name, ("link", self._signature(prompt, val[0], memo), val[1])))
            else:
                parts.append((name, repr(val)))
        sig = (node["class_type"], tuple(parts))
        memo[node_id] = sig
        return sig

    def _execution_order(self, prompt: dict[str, Any], outputs: list[str]) -> list[str]:
        """Dependencies first; among ready nodes, output nodes first, then the lowest id
        (ComfyUI's ux-friendly pick gives the recorded 1, 2, 3, ... order)."""
        needed: set[str] = set()
        stack = list(outputs)
        while stack:
            node_id = stack.pop()
            if node_id in needed:
                continue
            needed.add(node_id)
            stack.extend(_links(prompt[node_id], prompt))
        waiting = {n: set(_links(prompt[n], prompt)) for n in needed}
        order: list[str] = []
        while waiting:
            ready = [n for n, deps in waiting.items() if not deps]
            if not ready:
                raise RuntimeError("the prompt graph has a cycle")
            outs = [n for n in ready if n in outputs]
            pick = min(outs or ready, key=_node_sort_key)
            order.append(pick)
            del waiting[pick]
            for deps in waiting.values():
                deps.discard(pick)
        return order

    # --- events ------------------------------------------------------------------------
    def _message(
        self, run: RunState, event: str, data: dict[str, Any], broadcast: bool = False
    ) -> None:
        """ComfyUI's add_message: recorded in history; sent only to the prompt's client
        (a prompt without client_id gets these only when broadcast, as for interrupts)."""
        # The pod's wall clock (RP_AGENT_CLOCK_SKEW_S moves it on the devstack), as ComfyUI
        # on a pod whose clock is off would stamp it.
        data = {**data, "timestamp": int(pod_clock() * 1000)}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self.send(event, data, run.client_id)

    def _node_event(self, run: RunState, event: str, data: dict[str, Any]) -> None:
        """`executing` / `executed`: ComfyUI sends them only when the prompt has a client id.
        (Progress events have no such guard: a prompt queued without one broadcasts them.)"""
        if run.client_id is not None:
            self.send(event, data, run.client_id)

    def _progress_state(self, run: RunState) -> None:
        nodes = {k: dict(v) for k, v in run.progress.items()}
        self.send(
            "progress_state", {"prompt_id": run.item.prompt_id, "nodes": nodes}, run.client_id
        )

    def _set_progress(
        self, run: RunState, node_id: str, value: float, max_: float, state: str
    ) -> None:
        run.progress[node_id] = {
            "value": value,
            "max": max_,
            "state": state,
            "node_id": node_id,
            "prompt_id": run.item.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def _report_cached_output(self, run: RunState, node_id: str, ui: dict[str, Any]) -> None:
        prompt_id = run.item.prompt_id
        run.ui_outputs[node_id] = ui
        run.meta[node_id] = _meta(node_id)
        self._node_event(
            run,
            "executed",
            {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id},
        )
        self._set_progress(run, node_id, 1, 1, "finished")
        self._progress_state(run)

    def _check_interrupt(self) -> None:
        if self.interrupt_flag.is_set():
            self.interrupt_flag.clear()
            raise Interrupted()

    def tick(self, run: RunState, node_id: str, value: int, max_: int) -> None:
        """One sampler step: honour interrupts, then report progress."""
        self._check_interrupt()
        self._set_progress(run, node_id, float(value), float(max_), "running")
        self._progress_state(run)
        self.send(
            "progress",
            {"value": value, "max": max_, "prompt_id": run.item.prompt_id, "node": node_id},
            run.client_id,
        )

    # --- nodes -------------------------------------------------------------------------
    def _run_node(self, run: RunState, node_id: str, results: dict[str, tuple[Any, ...]]) -> None:
        node = run.item.prompt[node_id]
        class_type = node["class_type"]
        self._check_interrupt()
        self.current_node = node_id
        self._set_progress(run, node_id, 0.0, 1.0, "running")
        self._progress_state(run)
        self._node_event(
            run,
            "executing",
            {"node": node_id, "display_node": node_id, "prompt_id": run.item.prompt_id},
        )
        inputs = {}
        for name, val in node.get("inputs", {}).items():
            if isinstance(val, list) and len(val) == 2 and val[0] in results:
                inputs[name] = results[val[0]][val[1]]
            else:
                inputs[name] = val
        self._maybe_fault(run, node_id, class_type)
        outputs, ui = self._evaluate(run, node_id, class_type, inputs)
        results[node_id] = outputs
        run.executed.append(node_id)
        if ui is not None:
            run.ui_outputs[node_id] = ui
            run.meta[node_id] = _meta(node_id)
            self._node_event(
                run,
                "executed",
                {
                    "node": node_id,
                    "display_node": node_id,
                    "output": ui,
                    "prompt_id": run.item.prompt_id,
                },
            )
        self._set_progress(run, node_id, 1.0, 1.0, "finished")
        self._progress_state(run)

    def _maybe_fault(self, run: RunState, node_id: str, class_type: str) -> None:
        fault = run.fault
        if fault is None or run.fault_fired:
            return
        if run.fault_at_sampler and class_type not in SAMPLERS:
            return
        run.fault_fired = True
        if fault == "hang":
            log.info("stand-in fault: hanging at node %s until interrupted", node_id)
            while True:
                self._check_interrupt()
                time.sleep(0.05)
        if fault == "oom":
            raise InjectedFault("torch.OutOfMemoryError", OOM_MESSAGE)
        raise InjectedFault("RuntimeError", f"stand-in injected execution error in {class_type}")

    def _evaluate(
        self, run: RunState, node_id: str, class_type: str, inputs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        handler = _HANDLERS.get(class_type)
        if handler is not None:
            return handler(self, run, node_id, inputs)
        return pass_through(self.catalogue().get(class_type, {}), node_id, inputs), None

    def _meter(self, run: RunState, step: int, steps: int) -> None:
        if self.gpu_meter is None:
            return
        prompt = run.item.prompt
        prefixes = sorted(
            str(node["inputs"]["filename_prefix"])
            for node in prompt.values()
            if isinstance(node.get("inputs"), dict) and "filename_prefix" in node["inputs"]
        )
        line = {
            "t": pod_clock(),
            "prompt_id": run.item.prompt_id,
            "step": step,
            "steps": steps,
            "prefixes": prefixes,
        }
        with self.gpu_meter.open("a", encoding="utf-8") as meter:
            meter.write(json.dumps(line) + "\n")

    def _sample(
        self, run: RunState, node_id: str, inputs: dict[str, Any], steps: int, seed: int
    ) -> tuple[tuple[Any, ...], None]:
        for step in range(1, steps + 1):
            time.sleep(self.step_seconds)
            self._meter(run, step, steps)
            self.tick(run, node_id, step, steps)
        latent = inputs.get("latent_image")
        if isinstance(latent, Latent):
            latent = Latent(latent.width, latent.height, latent.length, seed & 0xFFFF)
        return (latent,), None

    def _save_video(
        self, run: RunState, inputs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        # ComfyUI 0.3.64 accepts any format/codec at validation (measured: HTTP 200 for "webm")
        # and fails when the node runs, converting them to its VideoContainer / VideoCodec enums.
        container, codec = inputs.get("format", "auto"), inputs.get("codec", "auto")
        if container not in VIDEO_CONTAINERS:
            raise ValueError(f"{container!r} is not a valid VideoContainer")
        if codec not in VIDEO_CODECS:
            raise ValueError("Only H264 codec is supported for now")
        video = inputs["video"]
        folder, filename, counter, subfolder = save_path(
            self.output_dir, str(inputs.get("filename_prefix", "video/ComfyUI"))
        )
        name = f"{filename}_{counter:05}_.mp4"
        write_mp4(folder / name, video, {"prompt": run.item.prompt})
        result = {"filename": name, "subfolder": subfolder, "type": "output"}
        return (), {"images": [result], "animated": [True]}

    def _save_images(
        self,
        inputs: dict[str, Any],
        base: Path,
        prefix: str,
        kind: str,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        frames: Frames = inputs["images"]
        folder, filename, counter, subfolder = save_path(base, prefix)
        results = []
        for index in range(frames.count):
            name = f"{filename}_{counter:05}_.png"
            write_png(folder / name, frames, index, metadata)
            results.append({"filename": name, "subfolder": subfolder, "type": kind})
            counter += 1
        return (), {"images": results}

    def _video_combine(self, inputs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        frames: Frames = inputs["images"]
        fps = float(inputs.get("frame_rate", 8))
        folder, filename, _, subfolder = save_path(
            self.output_dir, str(inputs.get("filename_prefix", "AnimateDiff"))
        )
        counter = vhs_counter(folder, filename)
        png_name = f"{filename}_{counter:05}.png"
        write_png(folder / png_name, frames, 0)
        name = f"{filename}_{counter:05}.mp4"
        write_mp4(folder / name, Video(frames, fps))
        gif = {
            "filename": name,
            "subfolder": subfolder,
            "type": "output",
            "format": str(inputs.get("format", "video/h264-mp4")),
            "frame_rate": fps,
            "workflow": png_name,
            "fullpath": str(folder / name),
        }
        return (["/".join(filter(None, [subfolder, name]))],), {"gifs": [gif]}


def prompt_fault(prompt: dict[str, Any]) -> str | None:
    """The fault a marker in one of the prompt's string inputs asks for (first marker wins)."""
    texts = [
        value
        for node in prompt.values()
        for value in node.get("inputs", {}).values()
        if isinstance(value, str)
    ]
    for marker, fault in MARKERS.items():
        if any(marker in text for text in texts):
            return fault
    return None


def pass_through(info: dict[str, Any], node_id: str, inputs: dict[str, Any]) -> tuple[Any, ...]:
    """What a node without its own handler (any catalogued node: a custom node from a snapshot,
    most core nodes) returns: for each declared output, the first input of the same declared
    type (a LoRA loader hands its MODEL on, an image filter its IMAGE), else a neutral value of
    that type, so the media reaching a save node downstream stay real frames and videos."""
    declared = info.get("input") or {}
    typed_inputs = [
        (name, spec[0])
        for category in ("required", "optional")
        for name, spec in (declared.get(category) or {}).items()
        if spec and isinstance(spec[0], str)
    ]
    outputs = []
    for out_type in info.get("output") or ["*"]:
        source = next(
            (name for name, in_type in typed_inputs if in_type == out_type and name in inputs),
            None,
        )
        outputs.append(inputs[source] if source is not None else neutral_value(out_type, node_id))
    return tuple(outputs)


def neutral_value(kind: str, node_id: str) -> Any:
    """A stand-in value of a ComfyUI type no input provided."""
    if kind == "IMAGE":
        return Frames(64, 64, 1)
    if kind == "LATENT":
        return Latent(64, 64, 1)
    if kind == "VIDEO":
        return Video(Frames(64, 64, 1), 16.0)
    return f"<{kind}:{node_id}>"


def annotated_path(name: str, input_dir: Path, output_dir: Path, temp_dir: Path) -> Path:
    """ComfyUI's `get_annotated_filepath`: a name ending in ` [output]`, ` [input]` or
    ` [temp]` is in that folder; any other name is under input/."""
    for suffix, folder in (
        (" [output]", output_dir),
        (" [input]", input_dir),
        (" [temp]", temp_dir),
    ):
        if name.endswith(suffix[1:]):  # ComfyUI tests for "[output]" and cuts one more char
            return folder / name[: -len(suffix)]
    return input_dir / name


def _links(node: dict[str, Any], prompt: dict[str, Any]) -> list[str]:
    return [
        val[0]
        for val in node.get("inputs", {}).values()
        if isinstance(val, list) and len(val) == 2 and val[0] in prompt
    ]


def _meta(node_id: str) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "display_node": node_id,
        "parent_node": None,
        "real_node_id": node_id,
    }


def _node_sort_key(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 62, node_id)


def _frames(value: Any) -> Frames:
    if isinstance(value, Frames):
        return value
    if isinstance(value, Video):
        return value.frames
    return Frames(64, 64, 1)


Handler = Callable[
    [Executor, RunState, str, dict[str, Any]], tuple[tuple[Any, ...], "dict[str, Any] | None"]
]


def _load_image(ex: Executor, run: RunState, node_id: str, i: dict[str, Any]) -> Any:
    with Image.open(
        annotated_path(str(i["image"]), ex.input_dir, ex.output_dir, ex.temp_dir)
    ) as img:
        width, height = img.size
    return (Frames(width, height, 1, None, 7), f"<MASK:{node_id}>"), None


def _wan_i2v(ex: Executor, run: RunState, node_id: str, i: dict[str, Any]) -> Any:
    latent = Latent(int(i["width"]), int(i["height"]), int(i["length"]))
    return (i.get("positive"), i.get("negative"), latent), None


def _ksampler_advanced(ex: Executor, run: RunState, node_id: str, i: dict[str, Any]) -> Any:
    steps = int(i["steps"])
    start, end = int(i.get("start_at_step", 0)), int(i.get("end_at_step", steps))
    return ex._sample(run, node_id, i, max(0, min(end, steps) - start), int(i["noise_seed"]))


def _upscale(ex: Executor, run: RunState, node_id: str, i: dict[str, Any]) -> Any:
    frames = _frames(i["image"])
    for step in range(1, frames.count + 1):
        time.sleep(ex.step_seconds)
        ex.tick(run, node_id, step, frames.count)
    return (Frames(frames.width * 2, frames.height * 2, frames.count, frames.color),), None


def _preview(ex: Executor, run: RunState, node_id: str, i: dict[str, Any]) -> Any:
    suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    return ex._save_images(i, ex.temp_dir, f"ComfyUI_temp_{suffix}", "temp")


_HANDLERS: dict[str, Handler] = {
    "EmptyImage": lambda ex, run, n, i: (
        (Frames(int(i["width"]), int(i["height"]), int(i["batch_size"]), int(i["color"])),),
        None,
    ),
    "LoadImage": _load_image,
    "EmptyHunyuanLatentVideo": lambda ex, run, n, i: (
        (Latent(int(i["width"]), int(i["height"]), int(i["length"])),),
        None,
    ),
    "Wan22ImageToVideoLatent": lambda ex, run, n, i: (
        (Latent(int(i["width"]), int(i["height"]), int(i["length"])),),
        None,
    ),
    "EmptyLatentImage": lambda ex, run, n, i: (
        (Latent(int(i["width"]), int(i["height"]), 1),),
        None,
    ),
    "WanImageToVideo": _wan_i2v,
    "KSampler": lambda ex, run, n, i: ex._sample(run, n, i, int(i["steps"]), int(i["seed"])),
    "KSamplerAdvanced": _ksampler_advanced,
    "VAEDecode": lambda ex, run, n, i: (
        (i["samples"].decoded_frames() if isinstance(i["samples"], Latent) else Frames(64, 64, 1),),
        None,
    ),
    "CreateVideo": lambda ex, run, n, i: ((Video(_frames(i["images"]), float(i["fps"])),), None),
    "GetVideoComponents": lambda ex, run, n, i: (
        (_frames(i["video"]), None, getattr(i["video"], "fps", 16.0)),
        None,
    ),
    "ImageUpscaleWithModel": _upscale,
    "ImageBlur": lambda ex, run, n, i: ((_frames(i["image"]),), None),
    "ImageScale": lambda ex, run, n, i: (
        (Frames(int(i["width"]), int(i["height"]), _frames(i["image"]).count),),
        None,
    ),
    # The stand-in's models are names, so a LoRA applied to one is the same model.
    "LoraLoaderModelOnly": lambda ex, run, n, i: ((i["model"],), None),
    "SaveVideo": lambda ex, run, n, i: ex._save_video(run, i),
    "SaveImage": lambda ex, run, n, i: ex._save_images(
        i,
        ex.output_dir,
        str(i.get("filename_prefix", "ComfyUI")),
        "output",
        {"prompt": run.item.prompt},
    ),
    "PreviewImage": _preview,
    "VHS_VideoCombine": lambda ex, run, n, i: ex._video_combine(i),
}
