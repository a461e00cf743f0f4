"""The run's money settings, read once before any pod: warm pods, the pod market, the budget.

`plan_run` validates RP_POD_IDLE_S, RP_POD_MARKET / RP_SPOT_BID_MAX and the budget caps
(RP_MAX_RUN_COST_USD, RP_MAX_DAILY_COST_USD) against the GPU catalog and the instance's history,
orders the allowed GPU types by RP_GPU_CHOICE (see `gpu_choice`), and returns a `RunPlan`: plain values the op chain passes along (the default IO manager pickles
the state between ops), from which each op rebuilds the run's `RunBudget`. Any bad setting is
one `Failure` line before a pod exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, Failure

from rp_pipeline.money.budget import BudgetError, BudgetSettings, RunBudget, plan_run_budget
from rp_pipeline.money.cost_table import cost_rows, read_events, samples
from rp_pipeline.money.gpu_choice import GpuChoiceError, GpuOrder, Workload, order_gpu_types
from rp_pipeline.money.market import MarketConfigError, PodMarket
from rp_pipeline.settings import SettingError, current


@dataclass(frozen=True)
class RunPlan:
    idle_s: float  # how long a pod whose work is done waits for the next run (0: terminate)
    market: PodMarket
    price: float  # the dearest $/h a pod of this run may cost (the budget's estimate)
    budget_settings: BudgetSettings
    video_s: float  # expected pod seconds per video
    spent_today_usd: float
    # The allowed GPU types in the order the run's pods try them, and why (the run log's line).
    gpu_types: tuple[str, ...] = ()
    gpu_reason: str = ""

    def budget(self) -> RunBudget:
        return RunBudget(
            self.budget_settings, spent_today_usd=self.spent_today_usd, video_seconds=self.video_s
        )


def plan_run(
    instance: DagsterInstance,
    catalog: list[Any],
    gpu_types: list[str],
    cloud_type: str,
    *,
    videos: int,
    pods: int,
    fallback_price: float,
    workload: Workload | None = None,
) -> RunPlan:
    """Read and check every money setting; a bad one is one Failure line, no pod launched."""
    try:
        idle_s: float = current("pod_idle_s")
        market = PodMarket.from_env()
        order = gpu_order(instance, catalog, gpu_types, cloud_type, workload)
        gpu_types = list(order.gpu_types)
        market.check(catalog, gpu_types)
        price = market.worst_price(catalog, gpu_types, cloud_type) or fallback_price
        budget = plan_run_budget(instance, videos=videos, pods=pods, cost_per_hr=price)
    except (SettingError, MarketConfigError, BudgetError, GpuChoiceError) as exc:
        raise Failure(f"no pod was launched: {exc}") from None
    return RunPlan(
        idle_s=idle_s,
        market=market,
        price=price,
        budget_settings=budget.settings,
        video_s=budget.video_seconds,
        spent_today_usd=budget.spent_today_usd,
        gpu_types=order.gpu_types,
        gpu_reason=order.reason,
    )


def gpu_order(
    instance: DagsterInstance,
    catalog: list[Any],
    gpu_types: list[str],
    cloud_type: str,
    workload: Workload | None,
) -> GpuOrder:
    """The allowed types ordered by RP_GPU_CHOICE; the history is read only when it matters."""
    choice: str = current("gpu_choice")
    rows = []
    if choice != "preference" and workload is not None:
        videos = samples(*read_events(instance))
        rows = cost_rows(videos) + cost_rows(videos, by_size=False)
    prices = {g.id: g.price_for(cloud_type) for g in catalog}
    return order_gpu_types(
        choice, gpu_types, rows, prices, workload,
        explore_videos=current("gpu_explore_videos"),
        max_usd_per_video=current("gpu_max_usd_per_video"),
    )  # fmt: skip
