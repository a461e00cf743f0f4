"""The pod-side lease: a pod whose run stopped renewing its lease ends itself through RunPod's API.

On the devstack with real processes (emulator pods running `rp-agent lease-watch`, the lease in
the moto S3 server); the decision rules (R2 outage, release, stray objects) with the real S3
server and a fake clock; the API call against a small local HTTP server speaking REST v2.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from rp_agent.keys import lease_key
from rp_agent.lease import LeaseWatcher
from rp_agent.pod_api import PodApiError, PodIdentity, terminate_self
from rp_agent.r2 import R2Settings, make_r2_client
from rp_devstack.runpod_emulator import RunPodEmulator
from rp_pipeline.integrations.runpod.resource import PodSpec, RunPodClient
from rp_pipeline.integrations.runpod.token import POD_TOKEN_ENV, new_pod_token, pod_token

from .helpers import wait_until

RUN_ID = "lease-run-0001"


def spec(env: dict[str, str]) -> PodSpec:
    return PodSpec(
        image="local/comfyui:test",
        gpu_types=["NVIDIA GeForce RTX 4090"],
        env={POD_TOKEN_ENV: new_pod_token(), **env},
    )


def write_lease(s3: Any, bucket: str, pod_id: str, expires_at: float) -> None:
    """What the run does (and renews) while it uses the pod."""
    body = {"pod_id": pod_id, "run_id": RUN_ID, "renewed_at": time.time(), "expires_at": expires_at}
    s3.put_object(Bucket=bucket, Key=lease_key(pod_id), Body=json.dumps(body).encode())


def pod_row(emulator: RunPodEmulator, pod_id: str) -> dict[str, Any]:
    return next(p for p in emulator.pods() if p["id"] == pod_id)


def lease_pod_env(r2: R2Settings, lease_s: float, poll_s: float) -> dict[str, str]:
    return {
        "ENABLE_R2_SYNC": "false",
        "R2_ENDPOINT": r2.endpoint,
        "R2_BUCKET": r2.bucket,
        "R2_ACCESS_KEY_ID": r2.access_key_id,
        "R2_SECRET_ACCESS_KEY": r2.secret_access_key,
        "RP_POD_LEASE_S": str(lease_s),
        "RP_POD_LEASE_POLL_S": str(poll_s),
    }


@pytest.fixture
def client(runpod_emulator: RunPodEmulator) -> RunPodClient:
    return RunPodClient(runpod_emulator.api_key, runpod_emulator.base_url, poll_interval_s=0.1)


# ---------------------------------------------------------------- devstack, real processes


def test_a_pod_nobody_renews_ends_itself(
    client: RunPodClient, runpod_emulator: RunPodEmulator, r2_settings: R2Settings
) -> None:
    lease_s = 2.0
    pod = client.launch(spec(env=lease_pod_env(r2_settings, lease_s, 0.5)), RUN_ID)

    wait_until(
        lambda: pod_row(runpod_emulator, pod.id)["desired_status"] == "TERMINATED",
        "the pod ending itself",
    )
    row = pod_row(runpod_emulator, pod.id)
    assert row["terminated_at"] - row["created_at"] >= lease_s  # never before the lease lapsed
    assert row["pids"] == []
    lease_log = (Path(row["root"]) / "logs" / "lease.log").read_text()
    # The watcher rarely hears RunPod's answer: terminating the pod ends the watcher too.
    assert f"lease of pod {pod.id} lapsed" in lease_log


def test_a_renewed_lease_keeps_the_pod_and_a_lapsed_one_ends_it(
    client: RunPodClient, runpod_emulator: RunPodEmulator, r2_settings: R2Settings
) -> None:
    s3 = make_r2_client(r2_settings)
    lease_s = 4.0
    pod = client.launch(spec(env=lease_pod_env(r2_settings, lease_s, 0.3)), RUN_ID)
    renewing = threading.Event()
    renewing.set()
    last_expiry: list[float] = []

    def renew() -> None:
        while renewing.is_set():
            last_expiry.append(time.time() + lease_s)
            write_lease(s3, r2_settings.bucket, pod.id, last_expiry[-1])
            time.sleep(0.5)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        ready = client.wait_until_ready(pod.id, deadline_s=60)
        # Alive for well over two lease lengths while renewed, ComfyUI answering throughout.
        alive_until = time.monotonic() + 3 * lease_s
        while time.monotonic() < alive_until:
            assert pod_row(runpod_emulator, pod.id)["desired_status"] == "RUNNING"
            time.sleep(0.5)
        stats = requests.get(
            f"{ready.comfyui_url}/system_stats",
            headers={"Authorization": f"Bearer {pod_token(ready.pod)}"},
            timeout=10,
        )
        assert stats.status_code == 200
    finally:
        renewing.clear()
        renewer.join()

    wait_until(
        lambda: pod_row(runpod_emulator, pod.id)["desired_status"] == "TERMINATED",
        "the pod ending itself after the renewals stopped",
    )
    assert pod_row(runpod_emulator, pod.id)["terminated_at"] >= last_expiry[-1]


@pytest.mark.parametrize("skew_s", ["600", "-600"], ids=["pod-ahead", "pod-behind"])
def test_a_devstack_pod_with_a_wrong_clock_keeps_its_lease_and_ends_when_it_lapses(
    client: RunPodClient, runpod_emulator: RunPodEmulator, r2_settings: R2Settings, skew_s: str
) -> None:
    """Real pod processes whose clock is 10 min off (RP_AGENT_CLOCK_SKEW_S): a 30 s lease keeps
    the pod, and once the run stops renewing it (a last grant of 1 s) the pod ends itself."""
    s3 = make_r2_client(r2_settings)
    env = {**lease_pod_env(r2_settings, 300, 0.3), "RP_AGENT_CLOCK_SKEW_S": skew_s}
    pod = client.launch(spec(env=env), RUN_ID)
    write_lease(s3, r2_settings.bucket, pod.id, time.time() + 30)
    root = Path(pod_row(runpod_emulator, pod.id)["root"])
    wait_until(
        lambda: "lease held by run" in (root / "logs" / "lease.log").read_text(),
        "the watcher reading the lease",
        30,
    )
    time.sleep(1.5)  # several polls with the wrong clock
    assert pod_row(runpod_emulator, pod.id)["desired_status"] == "RUNNING"
    write_lease(s3, r2_settings.bucket, pod.id, time.time() + 1)
    wait_until(
        lambda: pod_row(runpod_emulator, pod.id)["desired_status"] == "TERMINATED",
        "the pod ending itself",
        20,
    )
    lease_log = (root / "logs" / "lease.log").read_text()
    # The skew was real (R2's whole-second Date puts it at 599-601 s), and only reported.
    assert re.search(r"this pod's clock is (599|600|601) s (ahead of|behind) R2's", lease_log)


def test_pods_get_their_id_and_a_key_good_for_that_pod_only(
    client: RunPodClient, runpod_emulator: RunPodEmulator, r2_settings: R2Settings
) -> None:
    mine = client.launch(spec(env=lease_pod_env(r2_settings, 600, 5)), RUN_ID)
    other = client.launch(spec(env={"ENABLE_R2_SYNC": "false"}), RUN_ID)
    local = runpod_emulator.local_pod(mine.id)
    assert local is not None and "lease" in local.processes and "proxy" in local.processes
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{local.processes['lease'].pid}/environ").read_text().split("\0")
        if "=" in item
    )
    assert environ["RUNPOD_POD_ID"] == mine.id
    assert environ["RUNPOD_API_BASE_URL"] == runpod_emulator.base_url
    pod_key = environ["RUNPOD_API_KEY"]
    assert pod_key and pod_key != runpod_emulator.api_key

    def graphql(query: str) -> dict[str, Any]:
        reply = requests.post(
            f"{runpod_emulator.base_url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {pod_key}"},
            timeout=10,
        )
        assert reply.status_code == 200
        return reply.json()

    assert graphql(f'{{ pod(input: {{podId: "{mine.id}"}}) {{ id }} }}')["data"]["pod"] == {
        "id": mine.id
    }
    for query in (
        f'mutation {{ podTerminate(input: {{podId: "{other.id}"}}) }}',
        f'{{ pod(input: {{podId: "{other.id}"}}) {{ id }} }}',
        "{ myself { id } }",
    ):
        assert "limited to pod" in graphql(query)["errors"][0]["message"], query
    assert client.get(other.id) is not None
    v2 = f"{runpod_emulator.base_url}/v2/pods"
    as_pod = {"Authorization": f"Bearer {pod_key}"}
    assert requests.get(f"{v2}/{mine.id}", headers=as_pod, timeout=10).json()["id"] == mine.id
    for method, url, body in (
        ("GET", f"{v2}/{other.id}", None),
        ("POST", f"{v2}/{other.id}/action", {"action": "terminate"}),
        ("DELETE", f"{v2}/{other.id}", None),
        ("GET", v2, None),
    ):
        refused = requests.request(method, url, json=body, headers=as_pod, timeout=10)
        assert refused.status_code == 403, (method, url, refused.text)
        assert refused.json()["detail"] == f"this API key is limited to pod {mine.id}"

    before = runpod_emulator.request_counts().get("POST /v2/pods/{id}/action", 0)
    terminate_self(PodIdentity(mine.id, pod_key, runpod_emulator.base_url))
    assert runpod_emulator.request_counts()["POST /v2/pods/{id}/action"] == before + 1
    assert client.get(mine.id) is None
    assert client.get(other.id) is not None
    client.terminate(other.id)


# ---------------------------------------------------------------- decision rules (fake clocks)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def grant(s3: Any, bucket: str, pod_id: str, seconds: float, run_clock: float = 0.0) -> None:
    """The run's write: `seconds` of lease from now, stamped on the run's clock (`run_clock` s
    off the real one): only the difference of its two stamps may matter to the pod."""
    renewed_at = time.time() + run_clock
    body = {
        "pod_id": pod_id,
        "run_id": RUN_ID,
        "renewed_at": renewed_at,
        "expires_at": renewed_at + seconds,
    }
    s3.put_object(Bucket=bucket, Key=lease_key(pod_id), Body=json.dumps(body).encode())


@pytest.fixture
def watcher_for(
    r2_settings: R2Settings,
) -> Callable[..., tuple[LeaseWatcher, Clock, list[str]]]:
    def build(
        s3: Any = None, pod_clock: Callable[[], float] = time.time, **options: float
    ) -> tuple[LeaseWatcher, Clock, list[str]]:
        elapsed = Clock()
        ended: list[str] = []
        watcher = LeaseWatcher(
            s3 or make_r2_client(r2_settings),
            r2_settings.bucket,
            "outputs",
            PodIdentity("podabc", "pod-key", "http://127.0.0.1:9"),
            lease_s=options.get("lease_s", 300),
            poll_s=0.01,
            outage_s=options.get("outage_s", 1800),
            monotonic=elapsed,
            clock=pod_clock,
            terminate=lambda pod: ended.append(pod.pod_id),
        )
        return watcher, elapsed, ended

    return build


def test_without_a_lease_object_the_lease_counts_from_the_start(watcher_for) -> None:
    watcher, clock, _ = watcher_for(lease_s=300)
    clock.now += 299
    assert not watcher.poll()
    clock.now += 1
    assert watcher.poll()


def test_the_latest_object_decides_even_an_earlier_release(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    watcher, clock, ended = watcher_for(lease_s=300)
    grant(r2_client, r2_settings.bucket, "podabc", 900)
    assert not watcher.poll()
    clock.now += 600
    assert not watcher.poll()  # renewed past the boot lease
    assert watcher.run_id == RUN_ID
    grant(r2_client, r2_settings.bucket, "podabc", 0)  # the run lets go
    assert watcher.run(threading.Event()) == 0
    assert ended == ["podabc"]


def test_an_eviction_without_renewed_at_releases_the_pod(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    watcher, _, _ = watcher_for(lease_s=300)
    body = {"pod_id": "podabc", "run_id": RUN_ID, "state": "evicted", "expires_at": time.time()}
    r2_client.put_object(
        Bucket=r2_settings.bucket, Key=lease_key("podabc"), Body=json.dumps(body).encode()
    )
    assert watcher.poll()


def test_a_deleted_or_foreign_object_leaves_the_last_deadline(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    watcher, clock, _ = watcher_for(lease_s=300)
    grant(r2_client, r2_settings.bucket, "podabc", 900)
    assert not watcher.poll()
    r2_client.put_object(
        Bucket=r2_settings.bucket,
        Key=lease_key("podabc"),
        Body=json.dumps({"pod_id": "someone-else", "expires_at": time.time() + 10_000}).encode(),
    )
    clock.now += 898  # less a second or two of R2's whole-second stamps
    assert not watcher.poll()
    r2_client.delete_object(Bucket=r2_settings.bucket, Key=lease_key("podabc"))
    clock.now += 2
    assert watcher.poll()


def test_the_age_of_the_lease_comes_from_r2s_clock(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    """A pod that first reads its lease 2 s after the run wrote it counts those 2 s (R2's Date
    minus Last-Modified), not the moment it happened to look."""
    grant(r2_client, r2_settings.bucket, "podabc", 60)
    time.sleep(2.1)
    watcher, clock, _ = watcher_for(lease_s=300)
    assert not watcher.poll()
    # 60 s less the age (2.1 s), counted in whole seconds and never overstated.
    assert 57.5 <= watcher.deadline - clock.now <= 59.5


@pytest.mark.parametrize("skew_s", [600.0, -600.0], ids=["pod-ahead", "pod-behind"])
@pytest.mark.parametrize("run_skew_s", [0.0, 600.0], ids=["run-on-time", "run-ahead"])
def test_a_skewed_pod_clock_neither_ends_a_healthy_pod_nor_keeps_a_dead_runs_pod(
    r2_settings: R2Settings, r2_client, skew_s: float, run_skew_s: float
) -> None:
    """Real time and the watcher's real monotonic clock; the pod's wall clock 10 min off (the
    run's too, in one case). A lease of 60 s keeps the pod; a lease of 1 s, never renewed, ends
    it within a few seconds."""
    ended: list[str] = []
    watcher = LeaseWatcher(
        r2_client,
        r2_settings.bucket,
        "outputs",
        PodIdentity("podabc", "pod-key", "http://127.0.0.1:9"),
        lease_s=300,
        poll_s=0.1,
        clock=lambda: time.time() + skew_s,
        terminate=lambda pod: ended.append(pod.pod_id),
    )
    grant(r2_client, r2_settings.bucket, "podabc", 60, run_clock=run_skew_s)
    assert not watcher.poll(), "a healthy pod was ended by its clock"
    grant(r2_client, r2_settings.bucket, "podabc", 1, run_clock=run_skew_s)  # last renewal
    started = time.monotonic()
    stop = threading.Event()
    timer = threading.Timer(8, stop.set)  # bounded: a pod that outlives its run fails below
    timer.start()
    try:
        watcher.run(stop)
    finally:
        timer.cancel()
    assert ended == ["podabc"], "the pod outlived its dead run"
    assert time.monotonic() - started < 4


def test_an_r2_outage_does_not_end_a_pod_before_the_outage_bound(
    watcher_for, r2_settings: R2Settings
) -> None:
    # A real S3 client whose endpoint refuses connections: R2 down.
    dead = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        region_name="auto",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    watcher, clock, _ = watcher_for(s3=dead, lease_s=300, outage_s=1800)
    clock.now += 301
    assert not watcher.poll()  # lease lapsed, but R2 may just be hiding a renewal
    clock.now += 1800 - 301 - 1
    assert not watcher.poll()
    clock.now += 1
    assert watcher.poll()


def test_reading_again_after_an_outage_resets_the_outage_clock(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    watcher, clock, _ = watcher_for(lease_s=300, outage_s=600)
    clock.now += 500
    grant(r2_client, r2_settings.bucket, "podabc", 300)
    assert not watcher.poll()
    assert watcher.last_read_at == clock.now


# ---------------------------------------------------------------- the RunPod API call


class FakeRunPod:
    """A local HTTP server answering like RunPod's REST v2 (or like a GraphQL-only API)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append((self.path, self.headers["Authorization"], body))
                status, headers, payload = fake.answers.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_runpod() -> Iterator[Callable[..., FakeRunPod]]:
    servers: list[FakeRunPod] = []

    def start(*answers: tuple[int, dict[str, str], bytes]) -> FakeRunPod:
        servers.append(FakeRunPod(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


PROBLEM = {"Content-Type": "application/problem+json"}


def test_terminate_speaks_rest_v2_with_the_pods_key(fake_runpod) -> None:
    api = fake_runpod((204, {}, b""))
    terminate_self(PodIdentity("pod123", "pod-scoped-key", api.url))
    assert api.calls == [
        ("/v2/pods/pod123/action", "Bearer pod-scoped-key", {"action": "terminate"})
    ]


def test_a_pod_runpod_no_longer_knows_is_done(fake_runpod) -> None:
    gone = json.dumps({"title": "Not Found", "status": 404, "detail": "pod not found"}).encode()
    api = fake_runpod((404, PROBLEM, gone))
    terminate_self(PodIdentity("pod123", "k", api.url))
    assert len(api.calls) == 1


def test_v2_refusing_the_pods_key_falls_back_to_graphql(fake_runpod) -> None:
    denied = json.dumps({"title": "Unauthorized", "status": 401, "detail": "bad key"}).encode()
    api = fake_runpod(
        (401, PROBLEM, denied),
        (200, {"Content-Type": "application/json"}, b'{"data": {"podTerminate": null}}'),
    )
    terminate_self(PodIdentity("pod123", "k", api.url))
    assert api.calls[1][0] == "/graphql"


def test_an_api_without_v2_gets_graphql_pod_terminate(fake_runpod) -> None:
    api = fake_runpod(
        (404, {"Content-Type": "application/json"}, b'{"error": "no route"}'),
        (200, {"Content-Type": "application/json"}, b'{"data": {"podTerminate": null}}'),
    )
    terminate_self(PodIdentity("pod123", "k", api.url))
    path, auth, body = api.calls[1]
    assert path == "/graphql" and auth == "Bearer k"
    assert "podTerminate" in body["query"] and body["variables"] == {"id": "pod123"}


def test_refusals_and_rate_limits_are_errors_the_watcher_retries(fake_runpod) -> None:
    denied = json.dumps({"title": "Forbidden", "status": 403, "detail": "key scope"}).encode()
    api = fake_runpod(
        (403, PROBLEM, denied),
        (401, {"Content-Type": "text/plain"}, b"401 Unauthorized"),
        (429, {"Retry-After": "7"}, b""),
    )
    pod = PodIdentity("pod123", "k", api.url)
    with pytest.raises(PodApiError) as refused:  # v2 refused the key, and GraphQL did too
        terminate_self(pod)
    assert "REST v2: RunPod refused the pod's key (403): key scope" in str(refused.value)
    assert "GraphQL: RunPod refused the pod's key (401)" in str(refused.value)
    assert [call[0] for call in api.calls] == ["/v2/pods/pod123/action", "/graphql"]
    with pytest.raises(PodApiError) as limited:
        terminate_self(pod)
    assert limited.value.retry_after_s == 7
    assert "k" not in repr(pod).replace("pod_id", "")


def test_after_an_outage_the_run_gets_half_a_lease_to_renew(
    watcher_for, r2_client, r2_settings: R2Settings
) -> None:
    """R2 frozen longer than the lease: the lease read first when R2 answers again is the last
    one the run wrote before the outage, already lapsed. The run could not renew either, so the
    pod waits half a lease for a renewal before it ends itself."""
    from rp_agent.lease import LeaseUnreadable

    watcher, clock, _ = watcher_for(lease_s=60, outage_s=1800)
    grant(r2_client, r2_settings.bucket, "podabc", 60)
    assert not watcher.poll()
    real_read = watcher.read_lease

    def frozen() -> Any:
        raise LeaseUnreadable("R2 does not answer")

    watcher.read_lease = frozen  # type: ignore[method-assign]
    clock.now += 70
    assert not watcher.poll()  # lapsed, but R2 is not answering
    watcher.read_lease = real_read  # type: ignore[method-assign]
    # R2 answers again with the same, pre-outage write: lapsed 10 s ago by the watcher's clock.
    assert not watcher.poll()  # half a lease (30 s) from R2's return
    clock.now += 31
    assert watcher.poll()  # and no renewal came
