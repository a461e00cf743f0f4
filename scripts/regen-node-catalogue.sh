#!/usr/bin/env bash
# Regenerate the committed node catalogue snapshots (workflows/catalogue/core.json and one
# <package>.json per package in docker/custom_nodes.toml) from a built image, whose build saved
# ComfyUI's /object_info at /opt/rp/object_info.json. Run after changing the base image or
# custom_nodes.toml, then review the diff and commit it with that change.
#
# Usage: scripts/regen-node-catalogue.sh IMAGE      (e.g. runpod-dagster:local)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$#" -ne 1 ]; then
    echo "usage: scripts/regen-node-catalogue.sh IMAGE" >&2
    exit 2
fi
image="$1"
dump="$(mktemp)"
trap 'rm -f "$dump"' EXIT
docker run --rm --entrypoint cat "$image" /opt/rp/object_info.json >"$dump"
python3 docker/node_catalogue.py write --dump "$dump" --catalogue-dir workflows/catalogue \
    --config docker/custom_nodes.toml
python3 docker/node_catalogue.py check --dump "$dump" --catalogue-dir workflows/catalogue \
    --config docker/custom_nodes.toml
