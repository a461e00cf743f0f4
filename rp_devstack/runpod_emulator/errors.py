"""`EmulatorError`: a request RunPod refuses. Each API turns it into the error shape it speaks."""

from __future__ import annotations


class EmulatorError(Exception):
    """A request RunPod refuses: `field` names the offending input when there is one."""

    def __init__(self, message: str, *, status: int = 400, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
