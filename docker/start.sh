#!/usr/bin/env bash
# Pod entrypoint (PID 1): the token proxy, rp-agent, the lease watcher, model downloads,
# ComfyUI, and a clean stop.
#
# Order, and why:
#   0. `rp-agent proxy` owns the public ComfyUI port ($COMFYUI_PORT, 8188): RunPod publishes it
#      to the whole internet, so it forwards only requests carrying the pod's token
#      ($RP_POD_TOKEN; none set = every request refused) to ComfyUI, which listens on
#      127.0.0.1:$COMFYUI_INTERNAL_PORT only. Supervised like the agent.
#   1. rp-agent (when ENABLE_R2_SYNC=true), supervised: restarted with backoff if it dies.
#      It starts first so anything already in the output dir is uploaded while models load.
#      `rp-agent lease-watch` too (unless RP_POD_LEASE_S=0): it terminates the pod through
#      RunPod's API once the run using it stops renewing its lease in R2.
#   2. download_models.sh, in the foreground. Models come BEFORE ComfyUI on purpose: the
#      pipeline treats "ComfyUI answers HTTP" as "pod ready" and submits at once, so ComfyUI
#      must not answer before its weights exist. On a warm network volume every file is
#      already verified and this step takes seconds. A failed download is logged loudly and
#      ComfyUI starts anyway: a prompt then fails with ComfyUI's own error naming the missing
#      file, which is faster and clearer than a pod that never becomes ready.
#   3. ComfyUI, reading models from $MODELS_DIR and writing outputs to the watched dir.
# Boot phases (container_started, models_started, models_verified, comfyui_started,
# comfyui_ready) and the download's progress go to $RP_BOOT_STATUS; the agent copies that file
# to R2 (_rp/boot/<pod id>.json) so the pipeline can say what a pod that is not ready yet is doing.
# On SIGTERM/SIGINT (pod stop) ComfyUI is stopped first (no new outputs), then the proxy, then
# the agent is sent SIGTERM and awaited so it can flush its queue, then the lease watcher and
# the helpers; exit 0.
# If ComfyUI exits on its own, the agent is flushed the same way and the container exits with
# ComfyUI's status (1 if that was 0: ComfyUI never stops by itself on purpose).
#
# Secret values are never printed: only whether each one is set.
set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
COMFYUI_DATA_DIR="${COMFYUI_DATA_DIR:-/workspace/ComfyUI}"
MODELS_DIR="${MODELS_DIR:-$COMFYUI_DATA_DIR/models}"
# One output dir per pod: a network volume outlives pods, and an agent that found the previous
# pods' files in its watch dir would upload them all again under its own pod id.
COMFYUI_OUTPUT_DIR="${COMFYUI_OUTPUT_DIR:-$COMFYUI_DATA_DIR/output${RUNPOD_POD_ID:+/$RUNPOD_POD_ID}}"
COMFYUI_PORT="${COMFYUI_PORT:-8188}"
COMFYUI_INTERNAL_PORT="${COMFYUI_INTERNAL_PORT:-8189}"
# Whole seconds a pod lives without its run renewing the lease; 0 turns the watcher off.
RP_POD_LEASE_S="${RP_POD_LEASE_S:-300}"
COMFYUI_ARGS="${COMFYUI_ARGS:-}"
# The upload queue is SQLite: keep it on the container disk, not on the network filesystem
# (whose locking SQLite cannot trust). It only matters during this pod's life; a new queue
# re-checks the output dir against R2 at start.
RP_AGENT_STATE_DIR="${RP_AGENT_STATE_DIR:-/var/lib/rp-agent}"
ENABLE_R2_SYNC="${ENABLE_R2_SYNC:-false}"
# start.sh's own output and ComfyUI's are copied here (container disk), and the agent ships
# their new lines to R2 so the Dagster run using the pod shows them.
POD_LOG_DIR="$RP_AGENT_STATE_DIR/logs"
export RP_AGENT_LOG_FILES="${RP_AGENT_LOG_FILES:-$POD_LOG_DIR/start.log,$POD_LOG_DIR/comfyui.log}"
export MODELS_DIR
# When this boot reached each phase (container started, models verified, ComfyUI answering) and
# the model download's progress: JSON written by `rp-agent boot-phase` and the downloader, copied
# by the agent to {R2_PREFIX}/_rp/boot/{pod id}.json for the pipeline.
export RP_BOOT_STATUS="${RP_BOOT_STATUS:-$RP_AGENT_STATE_DIR/boot.json}"

SECRET_NAMES=(R2_ACCESS_KEY_ID R2_SECRET_ACCESS_KEY CIVITAI_API_KEY HF_TOKEN JUPYTER_PASSWORD PUBLIC_KEY
    RP_POD_TOKEN RUNPOD_API_KEY)
SHOWN_NAMES=(ENABLE_R2_SYNC R2_BUCKET R2_PREFIX WAN_720P ENABLE_TURBODIFFUSION GPU_TIER RUNPOD_POD_ID
    RP_POD_LEASE_S)

PROXY_PID=""
READY_WATCH_PID=""
AGENT_PID=""
LEASE_PID=""
DOWNLOAD_PID=""
COMFY_PID=""
COMFY_LOG_PID=""
LOG_COPY_PID=""
HELPER_PIDS=()
STOPPING=""

log() { printf '[start] %s\n' "$*"; }

# Best effort: a missing or failing rp-agent must not stop the pod from starting.
record_phase() {
    rp-agent boot-phase "$1" >/dev/null 2>&1 || log "could not record boot phase $1"
}

# Background: records "comfyui_ready" once ComfyUI answers on its loopback port, so the boot
# status shows how long model loading took apart from the download. Ends with ComfyUI.
watch_comfyui_ready() {
    local started=$SECONDS
    while kill -0 "$COMFY_PID" 2>/dev/null; do
        if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$COMFYUI_INTERNAL_PORT/system_stats" 2>/dev/null; then
            record_phase comfyui_ready
            log "ComfyUI answering ($((SECONDS - started)) s after it started)"
            return 0
        fi
        sleep 0.5
    done
}

# `copy_to_log FILE`: stdin to stdout and FILE. Deaf to TERM/INT (ignored signals stay ignored
# across exec): a stop must not end the copy before the stopping processes' last lines; it
# ends when every writer has exited.
copy_to_log() {
    trap '' TERM INT
    exec tee -a "$1"
}

# The image's ComfyUI checkout: hearmeman-style images keep it at /ComfyUI (fast container
# disk), others at /workspace/ComfyUI.
find_comfyui_dir() {
    local dir
    for dir in "${COMFYUI_DIR:-}" /ComfyUI /workspace/ComfyUI; do
        if [ -n "$dir" ] && [ -f "$dir/main.py" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

describe_env() {
    local name
    for name in "${SHOWN_NAMES[@]}"; do
        log "$name=${!name:-}"
    done
    # The endpoint embeds the Cloudflare account id: report presence, like the keys.
    for name in R2_ENDPOINT "${SECRET_NAMES[@]}"; do
        if [ -n "${!name:-}" ]; then log "$name: set"; else log "$name: not set"; fi
    done
}

# RunPod convention: the user's key arrives in PUBLIC_KEY; sshd serves TCP 22.
start_sshd() {
    if [ -z "${PUBLIC_KEY:-}" ] || ! command -v sshd >/dev/null 2>&1; then
        return 0
    fi
    local ssh_dir="${HOME:-/root}/.ssh"
    mkdir -p "$ssh_dir" /run/sshd
    chmod 700 "$ssh_dir"
    printf '%s\n' "$PUBLIC_KEY" >>"$ssh_dir/authorized_keys"
    chmod 600 "$ssh_dir/authorized_keys"
    ssh-keygen -A >/dev/null 2>&1 || true
    "$(command -v sshd)" -D -e &
    HELPER_PIDS+=("$!")
    log "sshd started"
}

# JupyterLab on 8888 only with a password; it reads the token from the environment, so
# the value never appears on a command line.
start_jupyter() {
    if [ -z "${JUPYTER_PASSWORD:-}" ] || ! command -v jupyter >/dev/null 2>&1; then
        return 0
    fi
    JUPYTER_TOKEN="$JUPYTER_PASSWORD" jupyter lab --ip=0.0.0.0 --port=8888 --no-browser \
        --allow-root --ServerApp.root_dir=/workspace >/tmp/jupyter.log 2>&1 &
    HELPER_PIDS+=("$!")
    log "jupyter lab started on 8888"
}

r2_settings_complete() {
    local name missing=()
    for name in R2_ENDPOINT R2_BUCKET R2_ACCESS_KEY_ID R2_SECRET_ACCESS_KEY; do
        [ -n "${!name:-}" ] || missing+=("$name")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "ENABLE_R2_SYNC=true but ${missing[*]} not set: rp-agent NOT started"
        return 1
    fi
}

# `supervise NAME COMMAND...` keeps COMMAND alive: `rp-agent supervise` (rp_agent/supervise.py,
# the one home of the policy, which devstack pods run too) restarts it after 1 s, 2 s, 4 s ... at
# most 30 s between crashes (back to 1 s after a minute of healthy running), tells each run it
# is a restart (RP_AGENT_RESTARTS, RP_AGENT_LAST_EXIT: the agent logs it to R2), and passes
# SIGTERM on once (the agent finishes its uploads before exiting), then ends. Always started
# with `&`: the exec makes the job's pid the supervisor's, which the stop signals.
supervise() {
    local name="$1"
    shift
    exec rp-agent supervise --name "$name" -- "$@"
}

# Started even without a token: the public port then refuses every request (503) rather than
# stand closed or, worse, open.
start_proxy() {
    if [ -z "${RP_POD_TOKEN:-}" ]; then
        log "RP_POD_TOKEN not set: the ComfyUI port refuses every request"
    fi
    supervise "token proxy" rp-agent proxy --listen "0.0.0.0:$COMFYUI_PORT" \
        --upstream "127.0.0.1:$COMFYUI_INTERNAL_PORT" &
    PROXY_PID=$!
}

start_lease_watch() {
    local name missing=()
    if ! [[ "$RP_POD_LEASE_S" =~ ^[0-9]+$ ]]; then
        log "RP_POD_LEASE_S=$RP_POD_LEASE_S is not whole seconds: lease watcher NOT started"
        return 0
    fi
    if [ "$RP_POD_LEASE_S" -eq 0 ]; then
        log "RP_POD_LEASE_S=0: no lease, this pod runs until it is stopped"
        return 0
    fi
    for name in RUNPOD_POD_ID RUNPOD_API_KEY R2_ENDPOINT R2_BUCKET R2_ACCESS_KEY_ID R2_SECRET_ACCESS_KEY; do
        [ -n "${!name:-}" ] || missing+=("$name")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "${missing[*]} not set: lease watcher NOT started, this pod will not end itself"
        return 0
    fi
    supervise "lease watcher" rp-agent lease-watch &
    LEASE_PID=$!
}

start_agent() {
    if [ "$ENABLE_R2_SYNC" != "true" ]; then
        log "ENABLE_R2_SYNC is not true: outputs stay on the volume only"
        return 0
    fi
    r2_settings_complete || return 0
    mkdir -p "$RP_AGENT_STATE_DIR" "$COMFYUI_OUTPUT_DIR"
    log "rp-agent watching $COMFYUI_OUTPUT_DIR"
    supervise rp-agent rp-agent sync --watch-dir "$COMFYUI_OUTPUT_DIR" \
        --state-dir "$RP_AGENT_STATE_DIR" &
    AGENT_PID=$!
}

write_extra_model_paths() {
    local config="$1"
    cat >"$config" <<EOF
# Written by start.sh: models live on the network volume, not in the image.
network_volume:
    base_path: $MODELS_DIR
    checkpoints: checkpoints
    clip: clip
    clip_vision: clip_vision
    controlnet: controlnet
    diffusion_models: diffusion_models
    embeddings: embeddings
    loras: loras
    text_encoders: text_encoders
    unet: unet
    upscale_models: upscale_models
    vae: vae
EOF
}

download_models() {
    # Its own process group, so a stop can reach curl (a grandchild) and leave the .part
    # file for the next start to resume, instead of an orphan writing on.
    if command -v setsid >/dev/null 2>&1; then
        setsid "$SCRIPT_DIR/download_models.sh" &
    else
        "$SCRIPT_DIR/download_models.sh" &
    fi
    DOWNLOAD_PID=$!
    wait "$DOWNLOAD_PID"
    local rc=$?
    DOWNLOAD_PID=""
    [ -n "$STOPPING" ] && return 0
    if [ "$rc" -ne 0 ]; then
        log "MODEL DOWNLOAD FAILED (status $rc): see the [models] lines above; starting ComfyUI anyway"
    fi
}

start_comfyui() {
    local comfy_dir config args
    if ! comfy_dir="$(find_comfyui_dir)"; then
        log "ComfyUI not found (set COMFYUI_DIR to the folder holding main.py)"
        return 1
    fi
    mkdir -p "$COMFYUI_OUTPUT_DIR" "$COMFYUI_DATA_DIR/input" "$MODELS_DIR"
    config="$COMFYUI_DATA_DIR/extra_model_paths.yaml"
    write_extra_model_paths "$config"
    # COMFYUI_ARGS is a user-supplied flag list (e.g. "--lowvram"): split on purpose.
    read -r -a args <<<"$COMFYUI_ARGS"
    # Loopback only: the proxy on $COMFYUI_PORT is the one way in from outside.
    # Its output goes to the container's log (fd 3) and to comfyui.log for the agent to ship;
    # the copy is this shell's child (fd 4 closed at once), so shutdown can wait for it.
    exec 4> >(copy_to_log "$POD_LOG_DIR/comfyui.log" >&3)
    COMFY_LOG_PID=$!
    (cd "$comfy_dir" && exec python3 main.py --listen 127.0.0.1 --port "$COMFYUI_INTERNAL_PORT" \
        --output-directory "$COMFYUI_OUTPUT_DIR" --input-directory "$COMFYUI_DATA_DIR/input" \
        --extra-model-paths-config "$config" "${args[@]}") >&4 2>&4 4>&- &
    COMFY_PID=$!
    exec 4>&-
    log "ComfyUI starting from $comfy_dir on 127.0.0.1:$COMFYUI_INTERNAL_PORT, behind the token proxy on port $COMFYUI_PORT (pid $COMFY_PID)"
    record_phase comfyui_started
    watch_comfyui_ready &
    READY_WATCH_PID=$!
}

stop_pid() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait "$pid" 2>/dev/null
}

# A stop can land between `cmd &` and the line that records its pid. Such a job is always the
# one started last, and shutdown stops in reverse start order, so it goes first. Its pid is also
# tried as a process group: the download runs as the leader of its own.
stop_unrecorded_jobs() {
    local pid known=" $DOWNLOAD_PID $COMFY_PID $READY_WATCH_PID $PROXY_PID $AGENT_PID $LEASE_PID ${HELPER_PIDS[*]} "
    for pid in $(jobs -p); do
        case "$known" in *" $pid "*) continue ;; esac
        kill -TERM -- "-$pid" 2>/dev/null
        stop_pid "$pid"
    done
}

# Stops everything in dependency order and exits with $1.
shutdown() {
    local status="$1" pid
    STOPPING=1
    trap '' TERM INT
    stop_unrecorded_jobs
    if [ -n "$DOWNLOAD_PID" ]; then
        log "stopping the model download (the partial file stays for the next start)"
        kill -TERM -- "-$DOWNLOAD_PID" 2>/dev/null
        stop_pid "$DOWNLOAD_PID"
    fi
    stop_pid "$READY_WATCH_PID"
    if [ -n "$COMFY_PID" ]; then
        log "stopping ComfyUI"
        stop_pid "$COMFY_PID"
    fi
    if [ -n "$PROXY_PID" ]; then
        log "stopping the token proxy"
        stop_pid "$PROXY_PID"
    fi
    if [ -n "$AGENT_PID" ]; then
        log "stopping rp-agent (it flushes pending uploads first)"
        stop_pid "$AGENT_PID"
    fi
    stop_pid "$LEASE_PID"
    for pid in "${HELPER_PIDS[@]}"; do stop_pid "$pid"; done
    log "stopped"
    # Every writer is stopped: the log copies end at their input's end; wait for them so
    # nothing of the pod outlives start.sh.
    exec >&3 2>&3
    for pid in "$COMFY_LOG_PID" "$LOG_COPY_PID"; do
        if [ -n "$pid" ]; then wait "$pid" || true; fi
    done
    exit "$status"
}

main() {
    mkdir -p "$POD_LOG_DIR"
    # fd 3: the container's own stdout, for ComfyUI's copy (start.log holds start.sh's lines).
    exec 3>&1
    exec > >(copy_to_log "$POD_LOG_DIR/start.log") 2>&1
    LOG_COPY_PID=$!
    # A shell cannot trap a signal that was ignored when it started (as a background job of
    # another shell ignores SIGINT): say so, rather than leave a Ctrl-C that silently does nothing.
    if [ "$(trap -p INT)" = "trap -- '' SIGINT" ]; then
        log "SIGINT was ignored when this started: stop it with SIGTERM"
    fi
    # Further stop signals are ignored from the first one on: shutdown runs once. Background
    # jobs of a non-interactive shell ignore SIGINT, so children always get TERM.
    trap 'trap "" TERM INT; log "SIGTERM received"; shutdown 0' TERM
    trap 'trap "" TERM INT; log "SIGINT received"; shutdown 0' INT
    # A new boot: the previous container's phases (a restart on the same disk) do not apply.
    mkdir -p "$(dirname "$RP_BOOT_STATUS")"
    rm -f "$RP_BOOT_STATUS"
    record_phase container_started
    describe_env
    start_sshd
    start_jupyter
    start_proxy
    start_agent
    start_lease_watch
    download_models
    start_comfyui || shutdown 1
    local rc
    wait "$COMFY_PID"
    rc=$?
    stop_pid "$READY_WATCH_PID"
    READY_WATCH_PID=""
    # Reached only when ComfyUI exited by itself (a signal runs shutdown from the trap).
    log "ComfyUI exited with status $rc"
    COMFY_PID=""
    shutdown "$((rc == 0 ? 1 : rc))"
}

main "$@"
