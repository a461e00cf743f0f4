"""Spot pods: the market setting, renting through podRentInterruptable, emulated preemption."""

from __future__ import annotations

import os
import urllib.error

import pytest
from runpod_helpers import GPU_4090, GPU_A6000, spec

from rp_devstack.runpod_emulator import EmulatorAdmin, RunPodEmulator
from rp_devstack.runpod_emulator.preemption import RandomPreemption
from rp_pipeline.integrations.runpod.resource import PodNotReadyError, RunPodClient
from rp_pipeline.money.market import (
    MarketConfigError,
    PodMarket,
    launch_on_market,
    was_preempted,
)

SPOT = PodMarket("interruptible")


@pytest.fixture
def api() -> str:
    """Spot pods exist only in RunPod's GraphQL API (REST v2 has no interruptible option)."""
    return "graphql"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def admin_view(emulator: RunPodEmulator, pod_id: str) -> dict:
    return next(p for p in emulator.pods() if p["id"] == pod_id)


# ---------------------------------------------------------------- the setting


def test_market_defaults_to_on_demand() -> None:
    assert PodMarket.from_env({}) == PodMarket("on-demand", None)
    assert PodMarket.from_env(
        {"RP_POD_MARKET": "Interruptible-Fallback", "RP_SPOT_BID_MAX": "0.4"}
    ) == PodMarket("interruptible-fallback", 0.4)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"RP_POD_MARKET": "spot"}, "RP_POD_MARKET"),
        ({"RP_SPOT_BID_MAX": "-0.5"}, "RP_SPOT_BID_MAX"),
        ({"RP_SPOT_BID_MAX": "cheap"}, "RP_SPOT_BID_MAX"),
        ({"RP_SPOT_BID_MAX": "nan"}, "RP_SPOT_BID_MAX"),
        ({"RP_SPOT_BID_MAX": "0"}, "RP_SPOT_BID_MAX"),
    ],
)
def test_bad_market_settings_are_one_clear_line(env: dict[str, str], names: str) -> None:
    with pytest.raises(MarketConfigError) as err:
        PodMarket.from_env(env)
    assert "\n" not in str(err.value) and names in str(err.value)


def test_spot_first_then_on_demand_in_that_order() -> None:
    base = spec(max_cost_per_hr=0.6)
    tries = PodMarket("interruptible-fallback", bid_max=0.3).specs(base)
    assert [(s.interruptible, s.max_cost_per_hr) for s in tries] == [(True, 0.3), (False, 0.6)]
    assert [s.interruptible for s in PodMarket().specs(spec(interruptible=True))] == [False]
    assert [s.interruptible for s in SPOT.specs(base)] == [True]


def test_a_bid_cap_no_gpu_can_meet_is_refused_before_launch(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    market = PodMarket("interruptible", bid_max=0.1)
    with pytest.raises(MarketConfigError, match=r"below the spot price .* RTX 4090 at \$0\.34/h"):
        market.check(client.gpu_types(), [GPU_4090, GPU_A6000])
    PodMarket("interruptible", bid_max=0.4).check(client.gpu_types(), [GPU_4090])
    assert runpod_emulator.pods() == []


# ---------------------------------------------------------------- renting


def test_interruptible_pod_is_rented_at_the_spot_price(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    pod = launch_on_market(client, spec(), "run-spot", SPOT)
    try:
        view = admin_view(runpod_emulator, pod.id)
        assert view["pod_type"] == "INTERRUPTABLE"
        assert pod.cost_per_hr == pytest.approx(0.34)  # the 4090: $0.69 on-demand
    finally:
        client.terminate(pod.id)


def test_fallback_rents_on_demand_when_no_spot_offer_is_within_the_bid(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    market = PodMarket("interruptible-fallback", bid_max=0.1)
    pod = launch_on_market(client, spec(), "run-fallback", market)
    try:
        assert admin_view(runpod_emulator, pod.id)["pod_type"] == "RESERVED"
        assert pod.cost_per_hr == pytest.approx(0.69)
    finally:
        client.terminate(pod.id)


# ---------------------------------------------------------------- preemption


def test_preemption_kills_the_pod_like_runpod_takes_a_spot_gpu_back(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    pod = launch_on_market(client, spec(), "run-spot", SPOT)
    try:
        client.wait_until_ready(pod.id, deadline_s=60)
        pids = admin_view(runpod_emulator, pod.id)["pids"]
        stock = runpod_emulator.free_gpus(
            GPU_4090, admin_view(runpod_emulator, pod.id)["datacenter"]
        )
        assert pids and not was_preempted(client, pod.id, interruptible=True)

        admin.preempt_pod(pod.id)

        view = admin_view(runpod_emulator, pod.id)
        assert view["desired_status"] == "EXITED" and view["pids"] == []
        assert not any(alive(pid) for pid in pids)
        assert runpod_emulator.free_gpus(GPU_4090, view["datacenter"]) == stock + 1
        assert admin_view(runpod_emulator, pod.id)["seconds"] == view["seconds"]  # billing stopped
        assert was_preempted(client, pod.id, interruptible=True)
        with pytest.raises(PodNotReadyError, match="EXITED"):
            client.wait_until_ready(pod.id, deadline_s=30, terminate_on_timeout=False)
    finally:
        client.terminate(pod.id)
    assert client.get(pod.id) is None


def test_an_on_demand_pod_is_never_preempted(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    pod = launch_on_market(client, spec(), "run-od", PodMarket())
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            admin.preempt_pod(pod.id)
        assert err.value.code == 400 and b"only interruptible pods" in err.value.read()
        assert admin_view(runpod_emulator, pod.id)["desired_status"] == "RUNNING"
        assert not was_preempted(client, pod.id, interruptible=False)
    finally:
        client.terminate(pod.id)


def test_random_preemption_takes_only_spot_pods(
    client: RunPodClient, runpod_emulator: RunPodEmulator
) -> None:
    spot = launch_on_market(client, spec(), "run-spot", SPOT)
    on_demand = launch_on_market(client, spec(), "run-od", PodMarket())
    try:
        assert RandomPreemption(runpod_emulator, rate_per_hour=0.0, seed=1).tick() == []
        # A rate this high preempts every running spot pod on the first draw.
        assert RandomPreemption(runpod_emulator, rate_per_hour=1e9, seed=1).tick() == [spot.id]
        assert admin_view(runpod_emulator, spot.id)["desired_status"] == "EXITED"
        assert admin_view(runpod_emulator, on_demand.id)["desired_status"] == "RUNNING"
    finally:
        client.terminate(spot.id)
        client.terminate(on_demand.id)


def test_random_preemption_knob_over_the_admin_api(runpod_emulator: RunPodEmulator) -> None:
    admin = EmulatorAdmin(runpod_emulator.base_url)
    admin.set_preemption_rate(3600.0, seed=7)
    chaos = runpod_emulator.random_preemption
    assert chaos is not None and chaos.rate_per_hour == 3600.0
    admin.set_preemption_rate(0)
    assert runpod_emulator.random_preemption is None
    with pytest.raises(urllib.error.HTTPError) as err:
        admin.set_preemption_rate(-1)
    assert err.value.code == 400
    admin.set_preemption_rate(60.0)
    runpod_emulator.reset()  # a reset turns the knob off, like every other fault
    assert runpod_emulator.random_preemption is None
