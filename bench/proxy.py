"""The pod's token proxy against its peer, ComfyUI asked directly, in the same run.

Workloads on the ComfyUI stand-in (loopback, one machine):
- P1: a 256 MiB `/view` download, streamed; MB/s and the proxy's peak RSS (a proxy that buffered
  the body would grow by the file's size);
- P2: 300 sequential `GET /system_stats` on one keep-alive connection; p50 / p95 latency.
Results: bench/results/proxy.json and proxy.md.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.agent import RssSampler
from rp_devstack.comfyui_standin import ComfyStandin
from rp_devstack.ports import free_port

RESULTS = Path(__file__).parent / "results"
MIB = 1024 * 1024
VIEW_BYTES = 256 * MIB
RUNS = 3
REQUESTS = 300


def start_proxy(upstream_port: int, token: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rp_agent.cli", "proxy", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{upstream_port}"],
        env={**os.environ, "RP_POD_TOKEN": token},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("proxy never listened")


def download_mb_s(url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    total = 0
    with requests.get(
        f"{url}/view", params={"filename": "big.mp4", "type": "output"}, headers=headers,
        stream=True, timeout=120,
    ) as reply:  # fmt: skip
        reply.raise_for_status()
        for chunk in reply.iter_content(MIB):
            total += len(chunk)
    assert total == VIEW_BYTES, total
    return VIEW_BYTES / MIB / (time.perf_counter() - started)


def latencies_ms(url: str, headers: dict[str, str]) -> list[float]:
    session = requests.Session()
    session.headers.update(headers)
    times = []
    for _ in range(REQUESTS):
        started = time.perf_counter()
        session.get(f"{url}/system_stats", timeout=10).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)


def main() -> int:
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        standin = ComfyStandin(Path(tmp) / "output", input_dir=Path(tmp) / "input")
        standin.output_dir.mkdir(parents=True, exist_ok=True)
        with open(standin.output_dir / "big.mp4", "wb") as out:
            block = os.urandom(MIB)
            for _ in range(VIEW_BYTES // MIB):
                out.write(block)
        direct = standin.start()
        proxy, via_proxy = start_proxy(standin.port, token)
        auth = {"Authorization": f"Bearer {token}"}
        try:
            rss_idle = RssSampler(proxy.pid)
            time.sleep(0.2)
            idle_mb = rss_idle.stop()
            rows = {"direct": {"P1 MB/s": [], "P2 ms": []}, "proxy": {"P1 MB/s": [], "P2 ms": []}}
            sampler = RssSampler(proxy.pid)
            for _ in range(RUNS):  # interleaved, so both see the same machine load
                rows["direct"]["P1 MB/s"].append(download_mb_s(direct, {}))
                rows["proxy"]["P1 MB/s"].append(download_mb_s(via_proxy, auth))
            peak_mb = sampler.stop()
            p2 = {"direct": latencies_ms(direct, {}), "proxy": latencies_ms(via_proxy, auth)}
        finally:
            proxy.terminate()
            proxy.wait(timeout=30)
            standin.stop()
    summary = {
        name: {
            "P1 median MB/s": round(statistics.median(rows[name]["P1 MB/s"]), 1),
            "P1 runs MB/s": [round(v, 1) for v in rows[name]["P1 MB/s"]],
            "P2 p50 ms": round(p2[name][len(p2[name]) // 2], 3),
            "P2 p95 ms": round(p2[name][int(len(p2[name]) * 0.95)], 3),
        }
        for name in ("direct", "proxy")
    }
    ratio = summary["proxy"]["P1 median MB/s"] / summary["direct"]["P1 median MB/s"]
    growth = round(peak_mb - idle_mb, 1)
    checks = {
        "P1 proxy/direct MB/s >= 0.5": (round(ratio, 2), ratio >= 0.5),
        "P1 proxy RSS growth MB <= 64": (growth, growth <= 64.0),
    }
    result = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}",
        "view_bytes": VIEW_BYTES,
        "requests": REQUESTS,
        "tools": summary,
        "proxy_rss_idle_mb": round(idle_mb, 1),
        "proxy_rss_peak_mb": round(peak_mb, 1),
        "targets": {k: {"value": v, "met": ok} for k, (v, ok) in checks.items()},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "proxy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# rp-agent proxy vs ComfyUI direct (stand-in on loopback, one run)",
        "",
        f"Machine: {result['machine']} (shared). P1: {VIEW_BYTES // MIB} MiB `/view`, median of "
        f"{RUNS}; P2: {REQUESTS} sequential `GET /system_stats` on one connection. "
        f"Started {result['started']}.",
        "",
        "| path | P1 median MB/s | P1 runs | P2 p50 ms | P2 p95 ms |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {name} | {s['P1 median MB/s']} | {s['P1 runs MB/s']} | {s['P2 p50 ms']} | "
            f"{s['P2 p95 ms']} |"
            for name, s in summary.items()
        ),
        "",
        f"Proxy RSS: {result['proxy_rss_idle_mb']} MB idle, {result['proxy_rss_peak_mb']} MB peak "
        "while streaming.",
        "",
        "| target | value | met |",
        "| --- | --- | --- |",
        *(f"| {k} | {v} | {'yes' if ok else 'no'} |" for k, (v, ok) in checks.items()),
        "",
    ]
    (RESULTS / "proxy.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if all(ok for _, ok in checks.values()) else 1
