#!/bin/bash
# The naive sync daemon (inotifywait, one Python uploader process per new file, top level of the
# watch dir only), the simplest design that works, so the benchmark can compare rp-agent with it. Only two changes, both needed to
# run it outside the pod image: the watch dir is an argument, and the interpreter is $PYTHON.
WATCH_DIR="${1:-/workspace/ComfyUI/output}"
UPLOADER="$(dirname "$0")/upload_to_r2.py"
# shellcheck disable=SC2162  # kept naive on purpose: the benchmark measures that design
inotifywait -m -e close_write --format '%w%f' "$WATCH_DIR" | while read NEW_FILE
do
    if [[ "$NEW_FILE" =~ \.(png|jpg|mp4|webm|wav)$ ]]; then
        "${PYTHON:-python3}" "$UPLOADER" "$NEW_FILE" &
    fi
done
