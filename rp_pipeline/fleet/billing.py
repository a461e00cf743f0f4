"""Who pays for a pod's seconds: each video pays the pod time since the previous video of the same
pod landed in R2 (the first one also pays the boot), the last one also pays the tail up to the
terminate call. So the shares of a pod add up to its billed time exactly, a slow video costs more
than a fast one, and a failed prompt's time is paid by the next video that lands.
"""

from __future__ import annotations

from rp_pipeline.fleet.state import BatchState, PodInfo
from rp_pipeline.money.budget import DEFAULT_VIDEO_S, BudgetSettings, RunBudget


def run_budget(state: BatchState) -> RunBudget:
    """The run's budget, rebuilt in each op from the plan; every pod of the run bills it."""
    budget: RunBudget = (
        state.plan.budget()
        if state.plan is not None
        else RunBudget(BudgetSettings(), spent_today_usd=0.0, video_seconds=DEFAULT_VIDEO_S)
    )
    for pod in state.pods.values():
        budget.pod_started(pod.pod_id, pod.cost_per_hr, at=pod.launched_at)
        if pod.terminated_at is not None:
            budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
    return budget


def pod_seconds(state: BatchState, pod: PodInfo, until: float | None = None) -> dict[str, float]:
    """Seconds of `pod` attributed to each partition it produced, up to `until` (the pod's
    terminate time for the settled split; None = up to each video's landing only)."""
    landed = sorted(
        (record.visible_at, key)
        for key, record in state.records.items()
        if state.served_by.get(key) == pod.pod_id
    )
    shares: dict[str, float] = {}
    # An adopted pod's idle time is settled apart (pod_idle_cost_usd), not in a video's share.
    previous = pod.launched_at + pod.adopted_idle_s
    for visible_at, key in landed:
        shares[key] = max(0.0, visible_at - previous)
        previous = max(previous, visible_at)
    if until is not None and landed:
        shares[landed[-1][1]] += max(0.0, until - previous)
    return shares


def billed_seconds(pod: PodInfo, now: float) -> float:
    """From the create request to our first terminate call (RunPod stops billing there)."""
    return max(0.0, (pod.terminated_at or now) - pod.launched_at)


def settled_costs(state: BatchState, now: float) -> dict[str, float]:
    """USD per partition such that they add up to the billed busy cost of every pod of the run
    (an adopted pod's idle time is settled apart, as pod_idle_cost_usd).

    A pod that produced no video (never ready, died before its first video, idle) is paid for
    by its failed partitions, or else spread evenly over the run's partitions."""
    costs: dict[str, float] = {key: 0.0 for key in state.partition_keys}
    unpaid = 0.0
    for pod in state.pods.values():
        billed = billed_seconds(pod, now)
        rate = pod.cost_per_hr / 3600.0
        shares = pod_seconds(state, pod, until=pod.launched_at + billed)
        billed = max(0.0, billed - pod.adopted_idle_s)
        if shares:
            for key, seconds in shares.items():
                costs[key] += seconds * rate
            continue
        tried = [key for key, pod_id in state.served_by.items() if pod_id == pod.pod_id]
        if tried:
            for key in tried:
                costs[key] += billed * rate / len(tried)
        else:
            unpaid += billed * rate
    if unpaid and costs:
        for key in costs:
            costs[key] += unpaid / len(costs)
    return costs
