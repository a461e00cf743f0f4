"""Cold start: the sequential curl downloader against rp_agent.models on a capped loopback CDN.

`python -m bench cold_start`; results in bench/results/cold_start.{json,md}.

A loopback HTTP server plays Hugging Face: resolve URLs answer 302 to a "CDN" path with
`X-Linked-Etag`/`X-Linked-Size`, the CDN serves sparse files with Range support, and every
connection is capped at BENCH_STREAM_MBPS (a CDN caps one stream, not a client). The model set is
the WAN 2.2 manifest's shape scaled down: two large diffusion models, an encoder, a VAE, LoRAs.
Measured in one run:
  1. sequential: the previous docker/download_models.sh (one curl per file, one after another;
     taken from git) -> the same files, timed;
  2. parallel: today's download_models.sh (DOWNLOAD_STREAMS ranges at once), timed;
  3. cuts: the server drops connections mid-range; count corrupted/truncated files after;
  4. wrong body: a right-sized file whose bytes differ from the published digest; it must be
     refused, named, and not put in place;
  5. warm boot: the full set present and marked verified, timed; the peer is the same check
     without markers (every byte hashed, as a first boot after upgrading would do).
Targets: parallel >= 3x faster than sequential, 0 bad files after cuts, wrong body caught, warm
verify < 10 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
REPO_ROOT = HERE.parent
SCRIPT = REPO_ROOT / "docker" / "download_models.sh"
MIB = 1024 * 1024
STREAM_MBPS = float(os.environ.get("BENCH_STREAM_MBPS", "8"))
STREAMS = os.environ.get("BENCH_STREAMS", "8")
SCALE_MIB = int(os.environ.get("BENCH_SCALE_MIB", "96"))  # the size of a "large" model
REPO = "Comfy-Org/Wan_2.2_ComfyUI_Repackaged"
OLD_SCRIPT_REF = os.environ.get("BENCH_OLD_SCRIPT_REF", "bfe8dec")  # last sequential version
# The peers from Hugging Face, in a throwaway environment (not dependencies of the image):
# huggingface_hub's own download (files in parallel like snapshot_download, one stream a file)
# and hf_transfer (the Rust multi-range downloader; huggingface_hub 1.x+ no longer drives it, so it
# is called directly, one file after another as huggingface_hub 0.x did). Empty: skipped.
HF_PEER_WITH = os.environ.get(
    "BENCH_HF_PEER_WITH", "huggingface_hub==2.4.0 hf_transfer==0.1.9"
).split()

PEER_SCRIPT = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
mode, base, dest, files, streams = sys.argv[1:6]
files = json.loads(files)
streams = int(streams)
from huggingface_hub import hf_hub_download
import hf_transfer
began = time.monotonic()  # timed from here: interpreter and imports are not the tool's speed
if mode == "huggingface_hub":
    def one(item):
        repo, path = item
        hf_hub_download(repo, path, local_dir=dest)
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(one, files))
else:
    import os
    for repo, path in files:
        target = os.path.join(dest, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        hf_transfer.download(url=f"{base}/{repo}/resolve/main/{path}", filename=target,
                             max_files=streams, chunk_size=10 * 1024 * 1024)
print(json.dumps({"seconds": time.monotonic() - began}))
"""

# (subdir, name, size in MiB): the fp8 WAN set's proportions, scaled so a 13 GB file is SCALE_MIB.
MODEL_SET = [
    ("diffusion_models", "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", SCALE_MIB),
    ("diffusion_models", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", SCALE_MIB),
    ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors", SCALE_MIB // 2),
    ("vae", "wan2.2_vae.safetensors", max(SCALE_MIB // 10, 2)),
    ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", max(SCALE_MIB // 26, 1)),
    ("loras", "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors", max(SCALE_MIB // 26, 1)),
]


def log(message: str) -> None:
    print(f"[bench cold_start] {message}", flush=True)


class Cdn:
    """Files on disk (sparse: a filled first byte, then a hole) behind HF-style URLs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[str, Path] = {}  # resolve path -> file served
        self.digests: dict[str, str] = {}  # resolve path -> advertised sha256
        self.cut_every: int | None = None  # drop a connection after this many bytes
        self.cuts = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, subdir: str, name: str, size: int, seed: int, wrong: bool = False) -> str:
        path = self.root / f"{seed}-{name}"
        with open(path, "wb") as handle:
            handle.write(bytes([seed % 251 + 1]) * 4096)
            handle.truncate(size)
        published = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(8 * MIB):
                published.update(block)
        if wrong:  # same size, one byte differs from what the hub publishes
            with open(path, "r+b") as handle:
                handle.seek(size // 2)
                handle.write(b"\xff")
        resolve = f"/{REPO}/resolve/main/split_files/{subdir}/{name}"
        self.files[resolve] = path
        self.digests[resolve] = published.hexdigest()
        return resolve

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cdn = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                if self.path in cdn.files:
                    size = cdn.files[self.path].stat().st_size
                    self.send_response(302)
                    self.send_header("Location", f"http://localhost:{cdn.port}/cdn{self.path}")
                    self.send_header("X-Linked-Etag", f'"{cdn.digests[self.path]}"')
                    self.send_header("X-Linked-Size", str(size))
                    self.send_header("X-Repo-Commit", "0" * 40)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                source = cdn.files.get(self.path.removeprefix("/cdn"))
                if source is None or not self.path.startswith("/cdn/"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                size = source.stat().st_size
                start, end = 0, size - 1
                spec = self.headers.get("Range")
                if spec:
                    first, _, last = spec.removeprefix("bytes=").partition("-")
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(end - start + 1))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not head:
                    self._paced(source, start, end + 1)

            def _paced(self, source: Path, start: int, stop: int) -> None:
                """Sends [start, stop) at STREAM_MBPS; with cuts on, drops the connection."""
                piece, rate = 256 * 1024, STREAM_MBPS * 1e6
                began, sent = time.monotonic(), 0
                with open(source, "rb") as handle:
                    while start + sent < stop:
                        if cdn.cut_every is not None and sent >= cdn.cut_every:
                            with cdn.lock:
                                cdn.cuts += 1
                            self.close_connection = True
                            return
                        data = os.pread(
                            handle.fileno(), min(piece, stop - start - sent), start + sent
                        )
                        try:
                            self.wfile.write(data)
                        except OSError:
                            return
                        sent += len(data)
                        ahead = sent / rate - (time.monotonic() - began)
                        if ahead > 0:
                            time.sleep(ahead)

        return Handler


def manifest_text() -> str:
    lines = []
    for subdir, name, _size in MODEL_SET:
        lines.append(f"wan720p any {REPO} split_files/{subdir}/{name} {subdir} 1 -")
    return "\n".join(lines) + "\n"


def run(script: Path, models: Path, cdn: Cdn, work: Path, **extra: str) -> tuple[float, Any]:
    manifest = work / "manifest.txt"
    manifest.write_text(manifest_text())
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(work),
        "MODELS_DIR": str(models),
        "HF_ENDPOINT": cdn.base_url,
        "MODELS_MANIFEST": str(manifest),
        "WAN_720P": "true",
        "GPU_TIER": "fp8",
        "RP_MODELS_PYTHON": sys.executable,
        "DOWNLOAD_STREAMS": STREAMS,
        "DOWNLOAD_CHUNK_MB": str(max(SCALE_MIB // 16, 1)),
        **extra,
    }
    began = time.monotonic()
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    return time.monotonic() - began, result


def run_peer(mode: str, dest: Path, cdn: Cdn, work: Path) -> dict[str, Any]:
    uv = shutil.which("uv")
    if not HF_PEER_WITH or uv is None:
        return {"skipped": "BENCH_HF_PEER_WITH empty or uv missing"}
    script = work / "peer.py"
    script.write_text(PEER_SCRIPT)
    files = [[REPO, f"split_files/{subdir}/{name}"] for subdir, name, _ in MODEL_SET]
    command = [uv, "run", "--isolated", "--no-project", "--quiet"]
    for requirement in HF_PEER_WITH:
        command += ["--with", requirement]
    env = {**os.environ, "HF_ENDPOINT": cdn.base_url, "HF_HOME": str(work / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1"}  # fmt: skip
    # Install first (not timed), then the timed run.
    subprocess.run([*command, "python", "-c", "pass"], env=env, capture_output=True)
    result = subprocess.run(
        [*command, "python", str(script), mode, cdn.base_url, str(dest), json.dumps(files),
         STREAMS],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    seconds = json.loads(lines[-1])["seconds"] if result.returncode == 0 and lines else 0.0
    flat = dest / "flat"
    for subdir, name, _ in MODEL_SET:  # huggingface_hub's layout -> MODELS_DIR's
        found = dest / "split_files" / subdir / name
        if found.exists():
            (flat / subdir).mkdir(parents=True, exist_ok=True)
            found.rename(flat / subdir / name)
    outcome = {"seconds": round(seconds, 2), "exit": result.returncode, **check(flat, cdn)}
    if result.returncode:
        outcome["error"] = result.stderr.strip().splitlines()[-1:]
    shutil.rmtree(dest, ignore_errors=True)
    return outcome


def check(models: Path, cdn: Cdn) -> dict[str, int]:
    """Files in place whose bytes are not the published ones, and files missing."""
    bad = missing = 0
    for resolve, digest in cdn.digests.items():
        subdir, name = resolve.split("/")[-2:]
        target = models / subdir / name
        if not target.exists():
            missing += 1
            continue
        hasher = hashlib.sha256()
        with open(target, "rb") as handle:
            while block := handle.read(8 * MIB):
                hasher.update(block)
        bad += hasher.hexdigest() != digest
    return {"corrupted_or_truncated": bad, "missing": missing}


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    total_mib = sum(size for *_x, size in MODEL_SET)
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} CPUs (shared), {platform.python_implementation()} "
        f"{platform.python_version()}",
        "stream_cap_mbps": STREAM_MBPS,
        "streams": int(STREAMS),
        "files": len(MODEL_SET),
        "total_mib": total_mib,
    }
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        work = Path(tmp)
        old_script = work / "download_models_sequential.sh"
        old_script.write_text(
            subprocess.run(
                ["git", "show", f"{OLD_SCRIPT_REF}:docker/download_models.sh"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        (work / "src").mkdir()
        cdn = Cdn(work / "src")
        try:
            for seed, (subdir, name, size) in enumerate(MODEL_SET, 1):
                cdn.add(subdir, name, size * MIB, seed)

            log(
                f"sequential (previous script, curl): {total_mib} MiB at {STREAM_MBPS} MB/s a stream"
            )
            seconds, result = run(old_script, work / "seq", cdn, work)
            report["sequential"] = {"seconds": round(seconds, 2), "exit": result.returncode,
                                    **check(work / "seq", cdn)}  # fmt: skip
            shutil.rmtree(work / "seq")

            log(f"parallel ({STREAMS} streams)")
            seconds, result = run(SCRIPT, work / "par", cdn, work)
            report["parallel"] = {"seconds": round(seconds, 2), "exit": result.returncode,
                                  **check(work / "par", cdn)}  # fmt: skip
            if result.returncode:
                log(result.stderr[-2000:])
            report["speedup"] = round(report["sequential"]["seconds"] / seconds, 2)

            for mode in ("huggingface_hub", "hf_transfer"):
                log(f"peer: {mode}")
                report[mode] = run_peer(mode, work / mode, cdn, work)

            log("warm boot: everything present and marked")
            seconds, result = run(SCRIPT, work / "par", cdn, work)
            report["warm_verify"] = {"seconds": round(seconds, 3), "exit": result.returncode}
            (work / "par" / ".verified.json").unlink()
            seconds, result = run(SCRIPT, work / "par", cdn, work)
            report["warm_verify_without_markers"] = {
                "seconds": round(seconds, 3),
                "exit": result.returncode,
                "hash_mb_per_s": round(total_mib * MIB / 1e6 / seconds, 1),
            }
            shutil.rmtree(work / "par")

            log("cuts: every connection dropped after 3 MiB")
            cdn.cut_every = 3 * MIB
            seconds, result = run(SCRIPT, work / "cut", cdn, work, DOWNLOAD_ATTEMPTS="3")
            report["cuts"] = {"seconds": round(seconds, 2), "exit": result.returncode,
                              "connections_cut": cdn.cuts, **check(work / "cut", cdn)}  # fmt: skip
            cdn.cut_every = None
            shutil.rmtree(work / "cut")

            log("wrong body of the right size")
            wrong = cdn.add("vae", "wan2.2_vae.safetensors", MODEL_SET[3][2] * MIB, 99, wrong=True)
            seconds, result = run(SCRIPT, work / "wrong", cdn, work)
            target = work / "wrong" / "vae" / "wan2.2_vae.safetensors"
            report["wrong_body"] = {
                "exit": result.returncode,
                "named": "vae/wan2.2_vae.safetensors" in result.stderr
                and cdn.digests[wrong] in result.stderr,
                "placed": target.exists(),
                "part_left": target.with_name(target.name + ".part").exists(),
                "message": next(
                    (line for line in result.stderr.splitlines() if "mismatch" in line), ""
                ),
            }
        finally:
            cdn.close()
    targets = {
        "parallel >= 3x sequential": report["speedup"] >= 3,
        "0 corrupted/truncated after cuts": report["cuts"]["corrupted_or_truncated"] == 0
        and report["cuts"]["missing"] == 0
        and report["cuts"]["exit"] == 0,
        "wrong body caught": report["wrong_body"]["exit"] != 0
        and report["wrong_body"]["named"]
        and not report["wrong_body"]["placed"]
        and not report["wrong_body"]["part_left"],
        "warm verify < 10 s": report["warm_verify"]["seconds"] < 10,
    }
    report["targets"] = targets
    (RESULTS / "cold_start.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "cold_start.md").write_text(markdown(report))
    log(json.dumps(report, indent=1))
    return 0 if all(targets.values()) else 1


def markdown(r: dict[str, Any]) -> str:
    seq, par = r["sequential"], r["parallel"]
    lines = [
        "# Cold start benchmark: model downloads",
        "",
        f"{r['when']}, {r['machine']}. Loopback HF-style hub (302 to a CDN path, X-Linked-Etag),",
        f"every connection capped at {r['stream_cap_mbps']} MB/s; {r['files']} files, {r['total_mib']} MiB",
        "(the fp8 WAN 2.2 set's shape scaled down). Command: `uv run python -m bench cold_start`.",
        "",
        "| run | seconds | exit | corrupted/truncated | missing |",
        "| --- | --- | --- | --- | --- |",
        f"| sequential: previous download_models.sh (curl, one file at a time) | {seq['seconds']} | {seq['exit']} | {seq['corrupted_or_truncated']} | {seq['missing']} |",
        f"| parallel: rp_agent.models, {r['streams']} streams | {par['seconds']} | {par['exit']} | {par['corrupted_or_truncated']} | {par['missing']} |",
        f"| parallel with cuts ({r['cuts']['connections_cut']} connections dropped) | {r['cuts']['seconds']} | {r['cuts']['exit']} | {r['cuts']['corrupted_or_truncated']} | {r['cuts']['missing']} |",
        *[
            f"| peer: {mode} | {p.get('seconds', '-')} | {p.get('exit', '-')} | "
            f"{p.get('corrupted_or_truncated', '-')} | {p.get('missing', '-')} |"
            for mode in ("huggingface_hub", "hf_transfer")
            if (p := r.get(mode)) and "skipped" not in p
        ],
        "",
        f"Speed-up over sequential: {r['speedup']}x. Peers: huggingface_hub downloads the files in",
        "parallel (like snapshot_download) but each with one stream, so the largest file's single",
        "capped stream bounds it; hf_transfer splits each file into ranges but takes files one",
        "after another, and neither checks the bytes against the sha256 the hub publishes.",
        "The peers are timed inside their process (after imports); the downloaders of this repo",
        "from the shell command, interpreter start and digest checks included.",
        "",
        f"Warm boot (all present, markers valid): {r['warm_verify']['seconds']} s. Without markers",
        f"(every byte hashed, a first boot after upgrading): {r['warm_verify_without_markers']['seconds']} s",
        f"({r['warm_verify_without_markers']['hash_mb_per_s']} MB/s including the hub look-ups).",
        "",
        f"Wrong body of the right size: exit {r['wrong_body']['exit']}, named with both digests:",
        f"{r['wrong_body']['named']}, placed: {r['wrong_body']['placed']}, part left: {r['wrong_body']['part_left']}.",
        f"`{r['wrong_body']['message']}`",
        "",
        "| target | met |",
        "| --- | --- |",
        *[f"| {name} | {'yes' if ok else 'NO'} |" for name, ok in r["targets"].items()],
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
