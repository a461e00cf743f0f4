#!/usr/bin/env bash
# Puts the model weights the shipped workflows need onto the network volume.
#
# The work is done by the `rp_agent.models` Python module of the image's rp-agent install:
# several files and several byte ranges of each large file at once (DOWNLOAD_STREAMS),
# resumable part files (<name>.part + <name>.part.json), every file checked by sha256 (pinned
# in the manifest, else the hub's own digest) before it gets its final name, a verified-marker
# per file ($MODELS_DIR/.verified.json) so a warm volume is not re-hashed, one flock on
# $MODELS_DIR/.download.lock so pods sharing a volume take turns, and a progress line every
# PROGRESS_INTERVAL_S seconds:
#   [models] downloading 31.2/80.4 GB, 410.0 MB/s, 2 min left, 3/12 files
# This script stays the entry point start.sh calls, and picks the Python that has rp_agent.
#
# Usage: download_models.sh [--list]
#   --list   print the resolved plan (tier, destination, URL) and exit without downloading.
#
# Environment (all optional; see docs/runpod-template-config.md): WAN_720P,
# ENABLE_TURBODIFFUSION, GPU_TIER, MODELS_DIR, HF_ENDPOINT, HF_TOKEN, CIVITAI_API_KEY,
# CIVITAI_ENDPOINT, MODELS_MANIFEST, DOWNLOAD_ATTEMPTS, DOWNLOAD_STREAMS, DOWNLOAD_CHUNK_MB,
# PROGRESS_INTERVAL_S, RP_BOOT_STATUS, and RP_MODELS_PYTHON (the interpreter to use; default the
# rp-agent venv's, else python3).
set -euo pipefail

find_python() {
    local candidate
    for candidate in "${RP_MODELS_PYTHON:-}" /opt/rp-agent/venv/bin/python "$(command -v python3 || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return 0
        fi
    done
    printf '[models] ERROR: no Python found: set RP_MODELS_PYTHON to the interpreter that has rp_agent\n' >&2
    return 2
}

python="$(find_python)"
exec "$python" -m rp_agent.models "$@"
