#!/usr/bin/env bash
# Puts the model weights the shipped workflows need onto the network volume.
#
# Files land in $MODELS_DIR/<subdir>/<name> (default /workspace/ComfyUI/models, the RunPod
# network volume), so a warm pod finds them and starts without downloading anything.
# Every file is downloaded to <name>.part with resume (curl -C -), verified by minimum size
# and, where the manifest knows it, sha256, and only then renamed into place: a file under
# its final name is always complete. A present, verified file is skipped without a request.
#
# Usage: download_models.sh [--list]
#   --list   print the resolved plan (tier, destination, URL) and exit without downloading.
#
# Environment (all optional; see docs/runpod-template-config.md):
#   WAN_720P=true               WAN 2.2 14B T2V + I2V (lightx2v 4-step LoRAs) + TI2V 5B set
#   ENABLE_TURBODIFFUSION=true  TurboWan2.2 I2V A14B 720P (quantized on fp8 tier, full on bf16)
#   GPU_TIER=auto|fp8|bf16      auto: bf16 when the first GPU has >= 70 GiB, else fp8
#   MODELS_DIR                  where model folders live (default /workspace/ComfyUI/models)
#   HF_ENDPOINT                 model hub base URL (default https://huggingface.co)
#   HF_TOKEN                    sent as a bearer header for gated Hugging Face repos
#   CIVITAI_API_KEY             sent as a bearer header for civitai:<version id> entries
#   CIVITAI_ENDPOINT            CivitAI base URL (default https://civitai.com)
#   MODELS_MANIFEST             file replacing the built-in manifest (same format; tests use it)
#   DOWNLOAD_ATTEMPTS           curl attempts per file, each resuming the last (default 5)
#
# Secrets are passed to curl on stdin (-K -), never on its command line or in a log line.
set -euo pipefail

MODELS_DIR="${MODELS_DIR:-/workspace/ComfyUI/models}"
HF_ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}"
CIVITAI_ENDPOINT="${CIVITAI_ENDPOINT:-https://civitai.com}"
DOWNLOAD_ATTEMPTS="${DOWNLOAD_ATTEMPTS:-5}"
# Weights at least this large (GiB of GPU memory) run unquantized on the bf16 tier.
BF16_MIN_GPU_GIB=70

log() { printf '[models] %s\n' "$*"; }
err() { printf '[models] ERROR: %s\n' "$*" >&2; }

# The built-in manifest. One entry per line, whitespace separated:
#   GROUP  TIER  SOURCE  PATH_IN_SOURCE  SUBDIR  MIN_MB  SHA256
# GROUP  wan720p (WAN_720P=true) or turbo (ENABLE_TURBODIFFUSION=true)
# TIER   any, fp8 or bf16: an fp8/bf16 entry is fetched only on that GPU tier
# SOURCE a Hugging Face repo id, or civitai:<model version id> (PATH_IN_SOURCE is then the
#        file name to save as)
# MIN_MB a floor just under the published size: catches truncated and HTML error bodies
# SHA256 "-" where no digest is pinned; file names and URLs are those of the official
#        ComfyUI WAN 2.2 templates (comfyui-workflow-templates) and the TurboDiffusion repo.
builtin_manifest() {
    cat <<'EOF'
wan720p any  Comfy-Org/Wan_2.1_ComfyUI_repackaged  split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors  text_encoders  6000  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/vae/wan_2.1_vae.safetensors  vae  200  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/vae/wan2.2_vae.safetensors  vae  1200  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors  diffusion_models  9000  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors  loras  500  -
wan720p any  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/loras/wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors  loras  500  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p fp8  Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors  diffusion_models  13000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_high_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_t2v_low_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_high_noise_14B_fp16.safetensors  diffusion_models  26000  -
wan720p bf16 Comfy-Org/Wan_2.2_ComfyUI_Repackaged  split_files/diffusion_models/wan2.2_i2v_low_noise_14B_fp16.safetensors  diffusion_models  26000  -
turbo   fp8  TurboDiffusion/TurboWan2.2-I2V-A14B-720P  TurboWan2.2-I2V-A14B-high-720P-quant.pth  diffusion_models  13000  -
turbo   fp8  TurboDiffusion/TurboWan2.2-I2V-A14B-720P  TurboWan2.2-I2V-A14B-low-720P-quant.pth  diffusion_models  13000  -
turbo   bf16 TurboDiffusion/TurboWan2.2-I2V-A14B-720P  TurboWan2.2-I2V-A14B-high-720P.pth  diffusion_models  26000  -
turbo   bf16 TurboDiffusion/TurboWan2.2-I2V-A14B-720P  TurboWan2.2-I2V-A14B-low-720P.pth  diffusion_models  26000  -
EOF
}

manifest() {
    if [ -n "${MODELS_MANIFEST:-}" ]; then
        cat "$MODELS_MANIFEST"
    else
        builtin_manifest
    fi
}

# Echoes fp8 or bf16. An explicit GPU_TIER wins; auto reads the first GPU's memory, and
# falls back to fp8 (the smaller download that fits every supported GPU) when it cannot.
resolve_tier() {
    local tier="${GPU_TIER:-auto}" mib
    case "$tier" in
        fp8 | bf16)
            echo "$tier"
            return 0
            ;;
        auto) ;;
        *)
            err "GPU_TIER must be auto, fp8 or bf16 (got '$tier')"
            return 2
            ;;
    esac
    # One line per GPU; `sed -n 1p` reads them all. `head -n 1` would exit after the first, and
    # nvidia-smi, killed by SIGPIPE on its next line, would fail the pipeline (pipefail) and
    # send an 80 GB GPU to the fp8 tier, depending on timing.
    mib="$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | sed -n 1p | tr -dc '0-9')" || mib=""
    if [ -z "$mib" ]; then
        echo fp8
    elif [ "$mib" -ge $((BF16_MIN_GPU_GIB * 1024)) ]; then
        echo bf16
    else
        echo fp8
    fi
}

group_enabled() {
    case "$1" in
        wan720p) [ "${WAN_720P:-false}" = "true" ] ;;
        turbo) [ "${ENABLE_TURBODIFFUSION:-false}" = "true" ] ;;
        *) return 1 ;;
    esac
}

source_url() {
    local source="$1" path="$2"
    case "$source" in
        civitai:*) echo "${CIVITAI_ENDPOINT%/}/api/download/models/${source#civitai:}" ;;
        *) echo "${HF_ENDPOINT%/}/${source}/resolve/main/${path}" ;;
    esac
}

# verify_download FILE MIN_MB [SHA256]: 0 when FILE exists, holds at least MIN_MB MiB and,
# if a digest is given, matches it. Prints why it failed.
verify_download() {
    local file="$1" min_mb="$2" want_sha="${3:--}" size got_sha
    if [ ! -f "$file" ]; then
        echo "missing"
        return 1
    fi
    size="$(stat -c %s "$file")"
    if [ "$size" -lt $((min_mb * 1024 * 1024)) ]; then
        echo "too small: ${size} bytes, expected at least ${min_mb} MiB (truncated download?)"
        return 1
    fi
    if [ "$want_sha" != "-" ] && [ -n "$want_sha" ]; then
        got_sha="$(sha256sum "$file" | cut -d ' ' -f 1)"
        if [ "$got_sha" != "${want_sha,,}" ]; then
            echo "sha256 mismatch: got ${got_sha}, expected ${want_sha,,}"
            return 1
        fi
    fi
    return 0
}

# curl reads its auth header from stdin (-K -) so a token never shows in `ps` or in logs.
curl_auth_config() {
    local source="$1"
    case "$source" in
        civitai:*)
            if [ -n "${CIVITAI_API_KEY:-}" ]; then
                printf 'header = "Authorization: Bearer %s"\n' "$CIVITAI_API_KEY"
            fi
            ;;
        *)
            if [ -n "${HF_TOKEN:-}" ]; then
                printf 'header = "Authorization: Bearer %s"\n' "$HF_TOKEN"
            fi
            ;;
    esac
}

# One curl attempt that continues $part from its current size; prints the HTTP status.
curl_resume() {
    local source="$1" url="$2" part="$3"
    curl_auth_config "$source" | curl --fail --location --silent --show-error \
        --connect-timeout 30 --speed-limit 1024 --speed-time 60 \
        --continue-at - --output "$part" --write-out '%{http_code}' --config - "$url"
}

# fetch_model SOURCE PATH SUBDIR MIN_MB SHA256: download (resuming) and verify one file.
fetch_model() {
    local source="$1" path="$2" subdir="$3" min_mb="$4" sha="$5"
    local name dest part url why attempt rc code
    name="$(basename "$path")"
    dest="$MODELS_DIR/$subdir/$name"
    part="$dest.part"
    if why="$(verify_download "$dest" "$min_mb" "$sha")"; then
        log "present  $subdir/$name"
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    # A file under the final name that fails verification (an older interrupted copy) is
    # continued rather than thrown away; a digest mismatch below discards it.
    if [ -f "$dest" ]; then
        log "incomplete $subdir/$name ($why): resuming"
        mv -f "$dest" "$part"
    fi
    url="$(source_url "$source" "$path")"
    for ((attempt = 1; attempt <= DOWNLOAD_ATTEMPTS; attempt++)); do
        if [ -s "$part" ]; then
            log "resume   $subdir/$name from $(stat -c %s "$part") bytes (attempt $attempt)"
        else
            log "download $subdir/$name (attempt $attempt)"
        fi
        rc=0
        code="$(curl_resume "$source" "$url" "$part")" || rc=$?
        case "$code" in
            200 | 206)
                # 0 = complete; anything else (e.g. 18, connection cut) is resumed next time.
                [ "$rc" -eq 0 ] && break
                ;;
            416)
                # The partial already holds every byte the server has: verify it below.
                rc=0
                break
                ;;
            401 | 403 | 404)
                err "download failed: $subdir/$name (HTTP $code from $url; check the name or token)"
                rm -f "$part"
                return 1
                ;;
        esac
        # 33: the server ignored the Range request, so the partial cannot be continued.
        if [ "$rc" -eq 33 ]; then
            rm -f "$part"
        fi
        [ "$rc" -ne 0 ] || rc=22
        if [ "$attempt" -lt "$DOWNLOAD_ATTEMPTS" ]; then
            sleep "$((attempt < 5 ? attempt : 5))"
        fi
    done
    if [ "$rc" -ne 0 ]; then
        err "download failed: $subdir/$name (last HTTP status ${code:-none}, curl exit $rc, $DOWNLOAD_ATTEMPTS attempts)"
        return 1
    fi
    if ! why="$(verify_download "$part" "$min_mb" "$sha")"; then
        err "verification failed: $subdir/$name: $why"
        # Wrong bytes cannot be fixed by resuming them: start from zero next time.
        rm -f "$part"
        return 1
    fi
    mv -f "$part" "$dest"
    log "ok       $subdir/$name"
}

# Prints "SOURCE PATH SUBDIR MIN_MB SHA256" for every entry the environment selects.
selected_entries() {
    local tier="$1" group entry_tier source path subdir min_mb sha
    while read -r group entry_tier source path subdir min_mb sha; do
        case "$group" in '' | '#'*) continue ;; esac
        group_enabled "$group" || continue
        [ "$entry_tier" = "any" ] || [ "$entry_tier" = "$tier" ] || continue
        echo "$source $path $subdir $min_mb ${sha:--}"
    done < <(manifest)
}

main() {
    local tier list_only=false failed=() source path subdir min_mb sha
    if [ "${1:-}" = "--list" ]; then
        list_only=true
    elif [ -n "${1:-}" ]; then
        err "usage: download_models.sh [--list]"
        return 2
    fi
    tier="$(resolve_tier)"
    log "models dir $MODELS_DIR, GPU tier $tier, WAN_720P=${WAN_720P:-false}, ENABLE_TURBODIFFUSION=${ENABLE_TURBODIFFUSION:-false}"
    if [ "$list_only" = true ]; then
        while read -r source path subdir min_mb sha; do
            printf '%s\t%s\t%s\n' "$tier" "$MODELS_DIR/$subdir/$(basename "$path")" "$(source_url "$source" "$path")"
        done < <(selected_entries "$tier")
        return 0
    fi
    mkdir -p "$MODELS_DIR"
    # Pods sharing one network volume must not write the same .part file at once.
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$MODELS_DIR/.download.lock"
        if ! flock --nonblock 9; then
            log "another pod is downloading to this volume: waiting for it to finish"
            flock 9
        fi
    fi
    while read -r source path subdir min_mb sha; do
        fetch_model "$source" "$path" "$subdir" "$min_mb" "$sha" || failed+=("$subdir/$(basename "$path")")
    done < <(selected_entries "$tier")
    if [ "${#failed[@]}" -gt 0 ]; then
        err "${#failed[@]} model(s) failed: ${failed[*]}"
        return 1
    fi
    log "all selected models present"
}

# Sourcing the script (tests) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
