"""What ComfyUI answers about prompts: the submission, the output files, the result read
from `/history/{prompt_id}`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

from rp_pipeline.integrations.comfyui.errors import PromptExecutionError

log = logging.getLogger(__name__)

Status = Literal["success", "error", "interrupted"]

# Keys under which ComfyUI nodes report files in their UI output.
_FILE_KEYS = ("images", "gifs", "videos", "audio")


@dataclass(frozen=True)
class Submission:
    prompt_id: str
    number: int
    submitted_at: float


@dataclass(frozen=True)
class OutputFile:
    node_id: str
    filename: str
    subfolder: str
    type: str
    animated: bool = False
    # True when ComfyUI answered the node from its cache: the file is an EARLIER prompt's file,
    # reported again; this prompt wrote nothing new for it.
    cached: bool = False

    @property
    def relative_path(self) -> str:
        """Path relative to ComfyUI's output (or temp/input) directory."""
        return (
            str(PurePosixPath(self.subfolder) / self.filename) if self.subfolder else self.filename
        )


@dataclass(frozen=True)
class PromptResult:
    prompt_id: str
    status: Status
    outputs: list[OutputFile]
    started_at: float | None
    finished_at: float | None
    generation_time_s: float | None
    cached_nodes: list[str] = field(default_factory=list)

    @property
    def new_outputs(self) -> list[OutputFile]:
        """The files this prompt actually wrote (outputs not served from ComfyUI's cache)."""
        return [out for out in self.outputs if not out.cached]

    @property
    def cached(self) -> bool:
        """True when ComfyUI answered the whole prompt from its cache: it reports "success" with
        the files of an earlier identical prompt and wrote no new file (`no_new_output`)."""
        return bool(self.outputs) and not self.new_outputs

    @property
    def no_new_output(self) -> bool:
        """True when the prompt wrote no file at all (cached, or a graph without outputs)."""
        return not self.new_outputs


def prompt_result(prompt_id: str, entry: dict[str, Any]) -> PromptResult:
    """The result a `/history` entry describes; PromptExecutionError if a node failed."""
    status_block = entry.get("status") or {}
    messages = {event: data for event, data in status_block.get("messages", [])}
    started = _seconds(messages.get("execution_start"))
    finished_msg = (
        messages.get("execution_success")
        or messages.get("execution_error")
        or messages.get("execution_interrupted")
    )
    finished = _seconds(finished_msg)
    if "execution_error" in messages:
        err = messages["execution_error"]
        raise PromptExecutionError(
            prompt_id,
            str(err.get("node_id", "")),
            str(err.get("node_type", "")),
            str(err.get("exception_message", "")),
            str(err.get("exception_type", "")),
        )
    status: Status
    if "execution_interrupted" in messages:
        status = "interrupted"
    elif status_block.get("status_str") == "success" or status_block.get("completed"):
        status = "success"
    else:
        status = "error"
    cached = [str(n) for n in (messages.get("execution_cached") or {}).get("nodes", [])]
    outputs = output_files(entry.get("outputs") or {}, set(cached))
    if outputs and all(out.cached for out in outputs):
        log.warning(
            "prompt %s was answered from ComfyUI's cache: its outputs are an earlier "
            "prompt's files and nothing new was written",
            prompt_id,
        )
    return PromptResult(
        prompt_id=prompt_id,
        status=status,
        outputs=outputs,
        started_at=started,
        finished_at=finished,
        generation_time_s=(finished - started) if started and finished else None,
        cached_nodes=cached,
    )


def output_files(outputs: dict[str, Any], cached_nodes: set[str]) -> list[OutputFile]:
    """Files from history outputs: SaveVideo -> `images` + `animated`, VHS -> `gifs`; those of
    nodes in `cached_nodes` (ComfyUI's `execution_cached`) are marked `cached`."""
    files: list[OutputFile] = []
    for node_id, ui in outputs.items():
        animated_flags = ui.get("animated") or []
        for key in _FILE_KEYS:
            for index, item in enumerate(ui.get(key) or []):
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                if item.get("type", "output") == "temp":
                    continue  # previews live in ComfyUI's temp dir, not in the synced outputs
                if key == "gifs":
                    animated = True
                elif key == "images" and animated_flags:
                    animated = bool(animated_flags[min(index, len(animated_flags) - 1)])
                else:
                    animated = False
                files.append(
                    OutputFile(
                        node_id=str(node_id),
                        filename=str(item["filename"]),
                        subfolder=str(item.get("subfolder", "")),
                        type=str(item.get("type", "output")),
                        animated=animated,
                        cached=str(node_id) in cached_nodes,
                    )
                )
    return files


def _seconds(message: dict[str, Any] | None) -> float | None:
    if not message or "timestamp" not in message:
        return None
    return float(message["timestamp"]) / 1000.0
