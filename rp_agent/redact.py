"""Remove secrets from log lines before they leave the pod (and again before Dagster logs them).

Two nets: the values of secret-looking environment variables (exact matches, whatever they look
like), and the shapes secrets take in logs (`Authorization: Bearer ...`, `token=...`,
presigned-URL signatures, `KEY=value` for secret-looking names).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
# Shorter values would match ordinary words; no real key is this short.
MIN_SECRET_LEN = 6
MASK = "***"

_PATTERNS = (
    re.compile(r"(?i)(authorization\s*[:=]\s*(?:bearer|basic|aws4-hmac-sha256)?\s*)[^\s,;\"']+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:token|api[_-]?key|password|secret|signature|credential)=)[^&\s\"']+"),
    re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"),
    re.compile(
        r"(?i)(\b[A-Z0-9_]*(?:KEY|SECRET|TOKEN|PASSWORD)[A-Z0-9_]*\s*[=:]\s*)(?!set\b|not set\b)"
        r"[^\s\"']+"
    ),
)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names look secret, longest first."""
    env = os.environ if environ is None else environ
    values = {
        value
        for name, value in env.items()
        if SECRET_NAME.search(name) and len(value) >= MIN_SECRET_LEN
    }
    return sorted(values, key=len, reverse=True)


class Redactor:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self.values = secret_values(environ)

    def __call__(self, text: str) -> str:
        for value in self.values:
            if value in text:
                text = text.replace(value, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + MASK, text)
        return text
