"""A budget that holds: a cap per run and a cap per UTC day, in dollars.

- RP_MAX_RUN_COST_USD: what one run may spend on pods (unset: no cap).
- RP_MAX_DAILY_COST_USD: what all runs together may spend in one UTC day (unset: no cap).
- RP_EXPECTED_VIDEO_S: seconds of pod time one video takes, used until the instance has
  `generated_video` materializations to learn from (default DEFAULT_VIDEO_S).
- RP_EXPECTED_BOOT_S: seconds a new pod bills before its first prompt (image pull, model load,
  ComfyUI start; default DEFAULT_BOOT_S). An adopted warm pod has no boot to pay.

Before any pod is launched, the batch's estimate (pod price x expected seconds per video, plus one
boot per pod the run must launch, none for idle pods it will adopt) is checked against both caps:
bad settings, a cap below one video, or a batch over a cap are refused in one line. While the
run goes on, `RunBudget` keeps the run's spend from the pods' prices and clocks; the fleet asks it
before it starts a pod or a prompt, and once the cap is reached it starts neither: queued prompts
fail with the budget's reason.

Expected seconds per video come from the last HISTORY `generated_video` materializations: each
carries `cost_usd` (the video's share of its pod's bill) and `cost_per_hr`, so share / price is
the pod time one video really took, boot and idle shares included; `generation_time_s` stands in
when the cost is missing. Today's spend is the sum of `cost_usd` of materializations since 00:00
UTC. Runs in flight at the same time do not see each other's unsettled spend: the daily cap
holds for what has settled plus this run's own spend.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dagster import AssetRecordsFilter, DagsterInstance

from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.settings import DEFAULT_BOOT_S, DEFAULT_VIDEO_S, SettingError, current, env_name

RUN_CAP_ENV = env_name("max_run_cost_usd")
DAY_CAP_ENV = env_name("max_daily_cost_usd")
VIDEO_S_ENV = env_name("expected_video_s")
__all__ = ["DEFAULT_BOOT_S", "DEFAULT_VIDEO_S"]
HISTORY = 20
VIDEO_ASSET = GENERATED_VIDEO


class BudgetError(ValueError):
    """A budget setting or a batch refused before launch; the message is one line."""


class BudgetExceeded(RuntimeError):
    """The cap is reached while running: no new pod, no new prompt. The message is the reason
    the fleet gives each queued prompt it fails."""


@dataclass(frozen=True)
class BudgetSettings:
    run_cap_usd: float | None = None
    day_cap_usd: float | None = None
    default_video_s: float = DEFAULT_VIDEO_S
    boot_s: float = DEFAULT_BOOT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BudgetSettings:
        """The budget settings as set now (`env`: this mapping instead of the process's)."""
        try:
            return cls(
                run_cap_usd=current("max_run_cost_usd", env),
                day_cap_usd=current("max_daily_cost_usd", env),
                default_video_s=current("expected_video_s", env),
                boot_s=current("expected_boot_s", env),
            )
        except SettingError as exc:
            raise BudgetError(str(exc)) from None

    @property
    def capped(self) -> bool:
        return self.run_cap_usd is not None or self.day_cap_usd is not None


@dataclass(frozen=True)
class VideoSeconds:
    seconds: float
    source: str  # said in refusals and logs, so a surprising estimate can be traced


def _float(metadata: Mapping[str, Any], key: str) -> float | None:
    entry = metadata.get(key)
    value: Any = getattr(entry, "value", entry)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _video_seconds(metadata: Mapping[str, Any]) -> float | None:
    cost, price = _float(metadata, "cost_usd"), _float(metadata, "cost_per_hr")
    if cost is not None and price is not None:
        return cost / price * 3600.0
    return _float(metadata, "generation_time_s")


def expected_video_seconds(
    instance: DagsterInstance, settings: BudgetSettings, limit: int = HISTORY
) -> VideoSeconds:
    """Median pod seconds per video over recent materializations, else the configured default."""
    records = instance.fetch_materializations(VIDEO_ASSET, limit=limit).records
    samples = [
        s
        for r in records
        if r.asset_materialization is not None
        and (s := _video_seconds(r.asset_materialization.metadata)) is not None
    ]
    if not samples:
        return VideoSeconds(settings.default_video_s, f"default {VIDEO_S_ENV}")
    return VideoSeconds(
        statistics.median(samples), f"median of {len(samples)} recent generated_video(s)"
    )


def spent_today(instance: DagsterInstance, now: float | None = None) -> float:
    """Dollars settled today (UTC): the `cost_usd` of every generated_video since midnight."""
    now = time.time() if now is None else now
    midnight = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    records_filter = AssetRecordsFilter(asset_key=VIDEO_ASSET, after_timestamp=midnight.timestamp())
    total, cursor = 0.0, None
    while True:
        page = instance.fetch_materializations(records_filter, limit=500, cursor=cursor)
        for record in page.records:
            if record.asset_materialization is not None:
                total += _float(record.asset_materialization.metadata, "cost_usd") or 0.0
        if not page.has_more:
            return total
        cursor = page.cursor


@dataclass(frozen=True)
class BatchEstimate:
    videos: int
    pods: int  # pods the run must launch (each pays a boot); adopted warm pods do not
    cost_per_hr: float  # the dearest price the run may pay per pod
    video: VideoSeconds
    boot_s: float = DEFAULT_BOOT_S

    @property
    def per_video_usd(self) -> float:
        return self.cost_per_hr * self.video.seconds / 3600.0

    @property
    def usd(self) -> float:
        seconds = self.videos * self.video.seconds + self.pods * self.boot_s
        return self.cost_per_hr * seconds / 3600.0

    def describe(self) -> str:
        return (
            f"{self.videos} video(s) x {self.video.seconds:.0f} s ({self.video.source}) + "
            f"{self.pods} pod boot(s) x {self.boot_s:.0f} s at ${self.cost_per_hr:.2f}/h"
        )


def check_before_launch(
    settings: BudgetSettings, estimate: BatchEstimate, spent_today_usd: float
) -> None:
    """Refuse the batch, before any pod exists, when a cap cannot hold it."""
    for name, cap in ((RUN_CAP_ENV, settings.run_cap_usd), (DAY_CAP_ENV, settings.day_cap_usd)):
        if cap is not None and estimate.per_video_usd > cap:
            raise BudgetError(
                f"{name} ${cap:.2f} is below one video's estimate ${estimate.per_video_usd:.2f} "
                f"({estimate.video.seconds:.0f} s at ${estimate.cost_per_hr:.2f}/h, "
                f"{estimate.video.source}); raise it"
            )
    if settings.run_cap_usd is not None and estimate.usd > settings.run_cap_usd:
        raise BudgetError(
            f"this batch is estimated at ${estimate.usd:.2f} ({estimate.describe()}), over "
            f"{RUN_CAP_ENV} ${settings.run_cap_usd:.2f}; raise it or request fewer videos"
        )
    if settings.day_cap_usd is not None:
        left = settings.day_cap_usd - spent_today_usd
        if estimate.usd > left:
            raise BudgetError(
                f"this batch is estimated at ${estimate.usd:.2f} ({estimate.describe()}) but only "
                f"${max(left, 0.0):.2f} of {DAY_CAP_ENV} ${settings.day_cap_usd:.2f} is left "
                f"today (UTC); raise it, request fewer videos or wait for tomorrow"
            )


@dataclass
class _PodClock:
    cost_per_hr: float
    started: float
    stopped: float | None = None


@dataclass
class RunBudget:
    """The run's spend while it runs; thread-safe, so every worker of the fleet can ask it."""

    settings: BudgetSettings
    spent_today_usd: float
    video_seconds: float
    clock: Callable[[], float] = time.time
    _pods: dict[str, _PodClock] = field(default_factory=dict)
    _prompts_in_flight: int = 0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def pod_started(self, pod_id: str, cost_per_hr: float, at: float | None = None) -> None:
        """From launch the pod bills this run; for an adopted pod pass
        at=claim.claimed_at - claim.idle_s, since the run pays the idle time it took over."""
        with self._lock:
            self._pods[pod_id] = _PodClock(cost_per_hr, self.clock() if at is None else at)

    def pod_stopped(self, pod_id: str, at: float | None = None) -> None:
        with self._lock:
            if pod_id in self._pods and self._pods[pod_id].stopped is None:
                self._pods[pod_id].stopped = self.clock() if at is None else at

    def spent(self) -> float:
        now = self.clock()
        with self._lock:
            return sum(
                p.cost_per_hr * max(0.0, (p.stopped or now) - p.started) / 3600.0
                for p in self._pods.values()
            )

    def check_new_pod(self, cost_per_hr: float, boots: bool = True) -> None:
        """Before launching a pod (its boot and one video must fit) or adopting a warm one
        (`boots=False`: one video must fit)."""
        boot_s = self.settings.boot_s if boots else 0.0
        need = cost_per_hr * (boot_s + self.video_seconds) / 3600.0
        what = "a new pod" + (" (boot and one video)" if boots else " (one video)")
        self._check(need, f"{what} at ${cost_per_hr:.2f}/h")

    def start_prompt(self, cost_per_hr: float) -> None:
        """Before submitting a prompt to a pod billing `cost_per_hr`: the videos in flight and
        this one must fit. Raises BudgetExceeded, else counts it in flight until finish_prompt."""
        per_video = cost_per_hr * self.video_seconds / 3600.0
        with self._lock:  # check and count as one step: two workers never take the last video
            need = per_video * (self._prompts_in_flight + 1)
            self._check(need, f"the next video (${per_video:.2f})")
            self._prompts_in_flight += 1

    def already_in_flight(self, n: int) -> None:
        """Count prompts an earlier op of the run submitted (they were checked then)."""
        with self._lock:
            self._prompts_in_flight += max(0, n)

    def finish_prompt(self) -> None:
        with self._lock:
            self._prompts_in_flight = max(0, self._prompts_in_flight - 1)

    def _check(self, need: float, what: str) -> None:
        spent = self.spent()
        run_cap, day_cap = self.settings.run_cap_usd, self.settings.day_cap_usd
        if run_cap is not None and spent + need > run_cap:
            raise BudgetExceeded(
                f"budget reached: this run has spent ${spent:.2f} of {RUN_CAP_ENV} "
                f"${run_cap:.2f}; {what} would not fit"
            )
        if day_cap is not None and self.spent_today_usd + spent + need > day_cap:
            raise BudgetExceeded(
                f"budget reached: ${self.spent_today_usd + spent:.2f} spent today (UTC) of "
                f"{DAY_CAP_ENV} ${day_cap:.2f}; {what} would not fit"
            )


def plan_run_budget(
    instance: DagsterInstance,
    *,
    videos: int,
    pods: int,
    cost_per_hr: float,
    environ: Mapping[str, str] | None = None,
    now: float | None = None,
) -> RunBudget:
    """Everything a run does before its first pod: read and validate the caps, estimate the
    batch from the instance's history, refuse it (BudgetError) if a cap cannot hold it, and
    return the `RunBudget` to consult while running."""
    settings = BudgetSettings.from_env(environ)
    video = expected_video_seconds(instance, settings)
    today = spent_today(instance, now) if settings.day_cap_usd is not None else 0.0
    estimate = BatchEstimate(
        videos=videos, pods=pods, cost_per_hr=cost_per_hr, video=video, boot_s=settings.boot_s
    )
    check_before_launch(settings, estimate, today)
    return RunBudget(settings, spent_today_usd=today, video_seconds=video.seconds)
