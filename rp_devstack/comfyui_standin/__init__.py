"""A wire-compatible ComfyUI stand-in for the devstack (HTTP + WebSocket, real MP4 outputs).

In-process: `ComfyStandin(output_dir).start() -> base_url`, `.stop()`.
CLI: `python -m rp_devstack.comfyui_standin --port P --output-dir D [--input-dir I]`.
"""

from rp_devstack.comfyui_standin.executor import FAULTS
from rp_devstack.comfyui_standin.standin import FAULT_ENV, ComfyStandin

__all__ = ["FAULTS", "FAULT_ENV", "ComfyStandin"]
