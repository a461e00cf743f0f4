"""`python -m rp_agent.models [--list]`: put the selected model weights on the volume.

Run by docker/download_models.sh (the entry point start.sh calls). Exit status: 0 all present,
1 some file failed (each named on stderr), 2 bad settings. Environment: see
docs/runpod-template-config.md (WAN_720P, ENABLE_TURBODIFFUSION, GPU_TIER, MODELS_DIR,
HF_ENDPOINT, HF_TOKEN, CIVITAI_API_KEY, CIVITAI_ENDPOINT, MODELS_MANIFEST, DOWNLOAD_ATTEMPTS,
DOWNLOAD_STREAMS, DOWNLOAD_CHUNK_MB, PROGRESS_INTERVAL_S, RP_BOOT_STATUS) and RP_LORAS
(the run's LoRAs, see rp_agent.models.loras; R2 ones use R2_ENDPOINT R2_BUCKET R2_ACCESS_KEY_ID
R2_SECRET_ACCESS_KEY).
Secrets only ever go into request headers, never into a log line.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rp_agent import bootstatus
from rp_agent.models.download import MIB, Downloader, Settings
from rp_agent.models.loras import LORAS_ENV, downloadable, parse_wants, settle_loras
from rp_agent.models.manifest import (
    TURBO_FLAG,
    TURBO_NOTE,
    ManifestError,
    load_manifest,
    resolve_tier,
    select,
)

LOCK_FILE = ".download.lock"


def log(message: str) -> None:
    print(f"[models] {message}", flush=True)


def err(message: str) -> None:
    print(f"[models] ERROR: {message}", file=sys.stderr, flush=True)


def _whole(name: str, given: str | None, default: int) -> int:
    value = given or str(default)
    if not value.isdigit() or int(value) < 1:
        raise ManifestError(f"{name} must be a whole number of at least 1 (got '{value}')")
    return int(value)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    interval = env.get("PROGRESS_INTERVAL_S") or "5"
    try:
        progress_interval = float(interval)
    except ValueError:
        raise ManifestError(f"PROGRESS_INTERVAL_S must be seconds (got '{interval}')") from None
    return Settings(
        models_dir=Path(env.get("MODELS_DIR") or "/workspace/ComfyUI/models"),
        env=env,
        streams=_whole("DOWNLOAD_STREAMS", env.get("DOWNLOAD_STREAMS"), 8),
        chunk_bytes=_whole("DOWNLOAD_CHUNK_MB", env.get("DOWNLOAD_CHUNK_MB"), 256) * MIB,
        attempts=_whole("DOWNLOAD_ATTEMPTS", env.get("DOWNLOAD_ATTEMPTS"), 5),
        progress_interval=progress_interval,
        status_file=bootstatus.status_path(env),
    )


def take_volume_lock(models_dir: Path) -> int:
    """Pods sharing one network volume must not write the same part file at once: the same
    flock(2) on `.download.lock` that `flock` in earlier versions of the script took."""
    fd = os.open(models_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another pod is downloading to this volume: waiting for it to finish")
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if env is None else env
    if args not in ([], ["--list"]):
        err("usage: download_models.sh [--list]")
        return 2
    try:
        settings = settings_from_env(env)
        tier = resolve_tier(env)
        entries = select(load_manifest(env), tier, env)
    except ManifestError as exc:
        err(str(exc))
        return 2
    # A bad RP_LORAS must not cost the pod its weights: said, skipped, exit 2 at the end.
    bad_loras = None
    try:
        loras = parse_wants(env.get(LORAS_ENV))
    except ManifestError as exc:
        loras, bad_loras = [], str(exc)
    log(
        f"models dir {settings.models_dir}, GPU tier {tier}, "
        f"WAN_720P={env.get('WAN_720P', 'false')}, "
        f"ENABLE_TURBODIFFUSION={env.get('ENABLE_TURBODIFFUSION', 'false')}"
    )
    if env.get(TURBO_FLAG, "false") == "true":
        log(TURBO_NOTE)
    if bad_loras is not None and args == ["--list"]:
        err(bad_loras)
        return 2
    if args == ["--list"]:
        for entry in entries:
            print(f"{tier}\t{settings.models_dir / entry.relpath}\t{entry.url(env)}", flush=True)
        for lora in loras:
            print(f"lora\t{settings.models_dir / lora.relpath}\t{lora.source}:{lora.location}")
        return 0
    if settings.status_file is not None:
        bootstatus.update(settings.status_file, phase="models_started")
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    take_volume_lock(settings.models_dir)
    downloader = Downloader(settings, log, err)

    def on_stop(signum: int, _frame: object) -> None:
        # A pod stop: record how far every part file got, so the next start resumes there.
        # start.sh signals the download's process group and then the process itself: a second
        # signal must not re-enter this handler while it holds a part's lock (a deadlock).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        downloader.save_all()
        log("stopped: partial files kept for the next start")
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    # The LoRAs' downloads share the weights' streams and progress; R2 and in-place ones follow.
    failed = downloader.run(entries + downloadable(loras))
    if loras:
        status = settle_loras(loras, settings.models_dir, env, set(failed), err)
        if settings.status_file is not None:
            bootstatus.update(settings.status_file, loras=status)
        wanted = {lora.relpath for lora in loras}
        failed = [f for f in failed if f not in wanted] + [
            f"loras/{s['name']}" for s in status if s["state"] != "ok"
        ]
        log(f"LoRAs: {sum(s['state'] == 'ok' for s in status)}/{len(status)} in place")
    if failed:
        err(f"{len(failed)} model(s) failed: {' '.join(failed)}")
        return 1
    if settings.status_file is not None:
        bootstatus.update(settings.status_file, phase="models_verified")
    log("all selected models present")
    if bad_loras is not None:
        err(f"{bad_loras}; no LoRA fetched")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
