"""The budget: caps from the env, estimates from real materializations, refusals, the run's meter."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from dagster import DagsterInstance, MaterializeResult, MetadataValue, asset, materialize

from rp_pipeline.money.budget import (
    DEFAULT_BOOT_S,
    DEFAULT_VIDEO_S,
    BatchEstimate,
    BudgetError,
    BudgetExceeded,
    BudgetSettings,
    RunBudget,
    VideoSeconds,
    check_before_launch,
    expected_video_seconds,
    plan_run_budget,
    spent_today,
)


def record_video(instance: DagsterInstance, **metadata: Any) -> None:
    """One real `generated_video` materialization with the metadata the pipeline writes."""
    values = {k: MetadataValue.float(v) if isinstance(v, float) else v for k, v in metadata.items()}

    @asset(name="generated_video")
    def generated_video() -> MaterializeResult:
        return MaterializeResult(metadata=values)

    assert materialize([generated_video], instance=instance).success


class Clock:
    """The run's wall clock, moved by the test (the budget meters pod time by it)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- settings


def test_no_caps_by_default() -> None:
    settings = BudgetSettings.from_env({})
    assert settings == BudgetSettings(None, None, DEFAULT_VIDEO_S) and not settings.capped


@pytest.mark.parametrize(
    "name",
    ["RP_MAX_RUN_COST_USD", "RP_MAX_DAILY_COST_USD", "RP_EXPECTED_VIDEO_S", "RP_EXPECTED_BOOT_S"],
)
@pytest.mark.parametrize("raw", ["-1", "0", "ten dollars", "inf", "nan"])
def test_bad_budget_settings_are_one_clear_line(name: str, raw: str) -> None:
    with pytest.raises(BudgetError) as err:
        BudgetSettings.from_env({name: raw})
    message = str(err.value)
    assert "\n" not in message and name in message and repr(raw) in message


# ---------------------------------------------------------------- what the instance knows


def test_estimate_falls_back_to_the_documented_default(instance: DagsterInstance) -> None:
    assert expected_video_seconds(instance, BudgetSettings()) == VideoSeconds(
        DEFAULT_VIDEO_S, "default RP_EXPECTED_VIDEO_S"
    )
    settings = BudgetSettings.from_env({"RP_EXPECTED_VIDEO_S": "240"})
    assert expected_video_seconds(instance, settings).seconds == 240.0


def test_estimate_is_the_median_pod_time_of_recent_videos(instance: DagsterInstance) -> None:
    # Billed shares of 360 s, 720 s and 1800 s at $0.72/h; one video without a bill counts
    # its generation time.
    for cost in (0.072, 0.144, 0.36):
        record_video(instance, cost_usd=cost, cost_per_hr=0.72, generation_time_s=100.0)
    record_video(instance, generation_time_s=600.0)
    video = expected_video_seconds(instance, BudgetSettings())
    assert video.seconds == pytest.approx((600.0 + 720.0) / 2)
    assert video.source == "median of 4 recent generated_video(s)"


def test_spent_today_sums_the_settled_cost_of_todays_videos(instance: DagsterInstance) -> None:
    record_video(instance, cost_usd=0.25, cost_per_hr=0.69)
    record_video(instance, cost_usd=0.5, cost_per_hr=0.69)
    record_video(instance, generation_time_s=30.0)  # no bill: costs nothing
    assert spent_today(instance) == pytest.approx(0.75)
    assert spent_today(instance, now=time.time() + 86_400) == 0.0  # tomorrow starts at zero


# ---------------------------------------------------------------- before any pod


def estimate(videos: int, seconds: float = 900.0, price: float = 0.8) -> BatchEstimate:
    return BatchEstimate(videos, pods=1, cost_per_hr=price, video=VideoSeconds(seconds, "test"))


def test_batch_estimate_is_price_times_video_time_plus_boots() -> None:
    est = estimate(4)
    assert est.per_video_usd == pytest.approx(0.2)
    assert est.usd == pytest.approx(0.8 * (4 * 900 + DEFAULT_BOOT_S) / 3600)
    # A run that adopts its warm pod launches none, so it pays no boot.
    warm = BatchEstimate(4, pods=0, cost_per_hr=0.8, video=VideoSeconds(900.0, "test"))
    assert warm.usd == pytest.approx(0.8 * 4 * 900 / 3600)
    booted = BudgetSettings.from_env({"RP_EXPECTED_BOOT_S": "60"})
    assert booted.boot_s == 60.0 and BudgetSettings.from_env({}).boot_s == DEFAULT_BOOT_S


def test_a_cap_below_one_video_is_refused() -> None:
    with pytest.raises(BudgetError) as err:
        check_before_launch(BudgetSettings(run_cap_usd=0.1), estimate(1), 0.0)
    assert str(err.value).startswith(
        "RP_MAX_RUN_COST_USD $0.10 is below one video's estimate $0.20"
    )
    with pytest.raises(BudgetError, match=r"RP_MAX_DAILY_COST_USD .* below one video"):
        check_before_launch(BudgetSettings(day_cap_usd=0.15), estimate(1), 0.0)


def test_a_batch_over_a_cap_is_refused_and_one_that_fits_passes() -> None:
    with pytest.raises(BudgetError, match=r"estimated at \$2\.04 .* over RP_MAX_RUN_COST_USD"):
        check_before_launch(BudgetSettings(run_cap_usd=2.0), estimate(10), 0.0)
    with pytest.raises(BudgetError, match=r"only \$0\.50 of RP_MAX_DAILY_COST_USD \$5\.00 is left"):
        check_before_launch(BudgetSettings(day_cap_usd=5.0), estimate(4), 4.5)
    check_before_launch(BudgetSettings(run_cap_usd=2.1, day_cap_usd=5.0), estimate(10), 2.9)


def test_plan_refuses_before_launch_from_real_history(instance: DagsterInstance) -> None:
    for _ in range(3):
        record_video(instance, cost_usd=0.2, cost_per_hr=0.8)  # 900 s each
    env = {"RP_MAX_DAILY_COST_USD": "1.0"}
    with pytest.raises(BudgetError, match=r"only \$0\.40 .* left today"):
        plan_run_budget(instance, videos=3, pods=1, cost_per_hr=0.8, environ=env)
    budget = plan_run_budget(instance, videos=1, pods=1, cost_per_hr=0.8, environ=env)
    assert budget.video_seconds == pytest.approx(900.0)
    assert budget.spent_today_usd == pytest.approx(0.6)


# ---------------------------------------------------------------- while running


def test_the_run_stops_starting_work_when_the_cap_is_reached() -> None:
    clock = Clock()
    budget = RunBudget(BudgetSettings(run_cap_usd=1.0), 0.0, video_seconds=100.0, clock=clock)
    budget.check_new_pod(3.6)  # boot 180 s + one video 100 s at $0.001/s = $0.28
    budget.pod_started("pod-a", 3.6)
    clock.now += 800  # $0.80 spent
    budget.start_prompt(3.6)  # $0.10 in flight
    budget.finish_prompt()
    with pytest.raises(BudgetExceeded) as no_pod:
        budget.check_new_pod(3.6)
    assert str(no_pod.value) == (
        "budget reached: this run has spent $0.80 of RP_MAX_RUN_COST_USD $1.00; "
        "a new pod (boot and one video) at $3.60/h would not fit"
    )
    budget.check_new_pod(3.6, boots=False)  # a warm pod to adopt: no boot, one video fits
    clock.now += 50  # $0.85 spent: one more $0.10 video fits, two do not
    budget.start_prompt(3.6)
    with pytest.raises(BudgetExceeded, match=r"the next video .* would not fit"):
        budget.start_prompt(3.6)
    budget.pod_stopped("pod-a")
    clock.now += 10_000  # a stopped pod bills nothing more
    assert budget.spent() == pytest.approx(0.85)


def test_the_daily_cap_counts_what_other_runs_settled_today() -> None:
    clock = Clock()
    budget = RunBudget(BudgetSettings(day_cap_usd=2.0), 1.9, video_seconds=200.0, clock=clock)
    budget.pod_started("pod-a", 1.8, at=clock.now - 100)  # adopted 100 s ago: $0.05
    with pytest.raises(BudgetExceeded, match=r"\$1\.95 spent today \(UTC\) of RP_MAX_DAILY"):
        budget.start_prompt(1.8)


def test_workers_racing_for_the_last_video_get_it_once() -> None:
    budget = RunBudget(BudgetSettings(run_cap_usd=0.25), 0.0, video_seconds=100.0, clock=Clock())
    started: list[bool] = []

    def worker() -> None:
        try:
            budget.start_prompt(3.6)  # $0.10 per video: two fit under $0.25
        except BudgetExceeded:
            started.append(False)
        else:
            started.append(True)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(started) == [False] * 4 + [True] * 2
