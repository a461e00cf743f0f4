"""A wire-compatible ComfyUI stand-in for the devstack (HTTP + WebSocket, real MP4 outputs).

In-process: `ComfyStandin(output_dir).start() -> base_url`, `.stop()`.
CLI: `python -m rp_devstack.comfyui_standin --port P --output-dir D [--input-dir I]`.

Like ComfyUI 0.3.64, a prompt's execution events (`execution_start`, `execution_cached`,
`executing`, `progress`, `executed`, `execution_success` / `_error` / `_interrupted`) go only to
the websocket of the `client_id` that queued it; `status` goes to every socket. A client with
another id hears nothing of the prompt and can only poll `/history`.

Fault injection (see `executor.py`): a marker in any string input of a prompt, normally its
positive text, makes that one prompt fail at its sampler node:
`[[fail]]` -> `execution_error` (RuntimeError); `[[oom]]` -> the real server's out-of-memory
`execution_error` ("torch.OutOfMemoryError"); `[[hang]]` -> hangs until `POST /interrupt`, then
`execution_interrupted`. `ComfyStandin(fault=...)`, `--fault` or env `COMFY_STANDIN_FAULT`
("execution_error", "oom", "hang") does the same to every prompt.
"""

from rp_devstack.comfyui_standin.executor import FAULTS, MARKERS
from rp_devstack.comfyui_standin.standin import FAULT_ENV, ComfyStandin

__all__ = ["FAULTS", "FAULT_ENV", "MARKERS", "ComfyStandin"]
