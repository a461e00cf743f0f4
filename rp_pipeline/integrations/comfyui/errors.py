"""What can go wrong talking to ComfyUI or running a prompt on it, as exceptions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ComfyUIError(Exception):
    """Any failure talking to ComfyUI or running a prompt on it."""


@dataclass(frozen=True)
class NodeError:
    node_id: str
    class_type: str
    type: str
    message: str
    details: str

    def __str__(self) -> str:
        detail = f" ({self.details})" if self.details else ""
        return f"node {self.node_id} ({self.class_type}): {self.message}{detail}"


class PromptValidationError(ComfyUIError):
    """ComfyUI refused the graph (HTTP 400); `node_errors` names every failing node."""

    def __init__(self, error: dict[str, Any], node_errors: list[NodeError]) -> None:
        self.error_type = str(error.get("type", ""))
        self.error_message = str(error.get("message", ""))
        self.node_errors = node_errors
        lines = [f"ComfyUI rejected the workflow: {self.error_message} [{self.error_type}]"]
        if not node_errors and error.get("details"):
            lines.append(f"  {error['details']}")
        lines += [f"  {err}" for err in node_errors]
        super().__init__("\n".join(lines))


class PromptExecutionError(ComfyUIError):
    """A node raised while the prompt ran (ComfyUI `execution_error`)."""

    def __init__(
        self,
        prompt_id: str,
        node_id: str,
        class_type: str,
        message: str,
        exception_type: str = "",
    ) -> None:
        self.prompt_id = prompt_id
        self.node_id = node_id
        self.class_type = class_type
        self.message = message
        self.exception_type = exception_type
        first_line = message.strip().splitlines()[0] if message.strip() else "(no message)"
        super().__init__(
            f"prompt {prompt_id} failed in node {node_id} ({class_type}): "
            f"{exception_type + ': ' if exception_type else ''}{first_line}"
        )

    @property
    def is_out_of_memory(self) -> bool:
        return "OutOfMemory" in self.exception_type or "out of memory" in self.message.lower()


class ComfyUITimeout(ComfyUIError):
    """The prompt did not finish before the caller's deadline (it may still be queued/running)."""

    def __init__(self, prompt_id: str, deadline_s: float, base_url: str) -> None:
        self.prompt_id = prompt_id
        self.deadline_s = deadline_s
        super().__init__(
            f"prompt {prompt_id} did not finish within {deadline_s:.0f} s on {base_url}"
        )


class PromptVanished(ComfyUIError):
    """ComfyUI no longer knows the prompt (neither queued, running nor in history): it was
    restarted, or the prompt was deleted from its queue. Only this prompt is lost."""

    def __init__(self, prompt_id: str, base_url: str) -> None:
        self.prompt_id = prompt_id
        super().__init__(
            f"prompt {prompt_id} is neither queued nor finished on {base_url}: "
            "ComfyUI restarted or the prompt was deleted from its queue"
        )


class ComfyUIUnavailable(ComfyUIError):
    """ComfyUI (or the proxy in front of it) did not answer, or answered 5xx / 524."""


def node_errors(raw: dict[str, Any]) -> list[NodeError]:
    errors: list[NodeError] = []
    for node_id, info in raw.items():
        for err in info.get("errors", []):
            errors.append(
                NodeError(
                    node_id=str(node_id),
                    class_type=str(info.get("class_type", "")),
                    type=str(err.get("type", "")),
                    message=str(err.get("message", "")),
                    details=str(err.get("details", "")),
                )
            )
    return errors
