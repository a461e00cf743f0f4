"""Finding new objects under `{prefix}/{day}/{pod}/{path}` without listing the whole prefix.

Keys are not time-ordered inside a day: a new pod id can sort before a pod already seen, and
inside one pod a new file name can sort before an older one (ComfyUI prefixes are free text).
So the cursor keeps, per day and per pod:

- `last`: the greatest key seen; a pod that can no longer write (not running on RunPod and past
  a grace period for the agent's final flush) is listed with `StartAfter=last` only (one cheap
  request that normally returns nothing) for an hour, then not at all: a pod RunPod has not
  listed for an hour has no agent left to upload anything;
- for pods that can still write (running, recently running, or new to the cursor) the pod
  prefix is listed in full and an object is new when it is not in `recent`, the keys whose
  LastModified is within an overlap window of the newest seen. The window absorbs multipart
  uploads, whose LastModified is the upload's start, not its completion.

Only day folders are listed, so the agent's receipts and log objects under `{prefix}/_rp/` are
never seen. Each tick lists the pods of the last `overlap_days` + today with `Delimiter="/"` (new pods and
late uploads of the previous day are found) and drops older days from the cursor. Cost per tick:
O(days + recently live pods + objects of live pods), independent of the bucket's size.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rp_pipeline.integrations.r2.resource import R2Resource

CURSOR_VERSION = 1
# The agent keys objects made off RunPod (no RUNPOD_POD_ID) under "local": never "finished".
ALWAYS_LIVE = frozenset({"local"})


@dataclass
class PodMark:
    last: str = ""
    newest: float = 0.0  # newest LastModified seen (epoch s)
    recent: dict[str, float] = field(default_factory=dict)  # key -> LastModified, in window
    live_at: float = 0.0  # when the pod was last known able to write


@dataclass
class ScanResult:
    new_keys: list[str]
    cursor: str
    list_requests: int
    objects_listed: int
    bootstrapped: bool


@dataclass
class ScanPolicy:
    overlap_days: int = 1
    recent_window_s: float = 600.0
    flush_grace_s: float = 600.0
    # Pods not live for longer than this are not even probed with StartAfter.
    probe_dormant_s: float = 3600.0


def day_strings(now: float, overlap_days: int) -> list[str]:
    today = datetime.fromtimestamp(now, tz=UTC).date()
    return [(today - timedelta(days=n)).isoformat() for n in range(overlap_days, -1, -1)]


def load_cursor(raw: str | None) -> dict[str, dict[str, PodMark]] | None:
    if not raw:
        return None
    data = json.loads(raw)
    if data.get("v") != CURSOR_VERSION:
        return None
    return {
        day: {pod: PodMark(**mark) for pod, mark in pods.items()}
        for day, pods in data["days"].items()
    }


def dump_cursor(days: dict[str, dict[str, PodMark]]) -> str:
    return json.dumps(
        {
            "v": CURSOR_VERSION,
            "days": {
                day: {pod: mark.__dict__ for pod, mark in pods.items()}
                for day, pods in days.items()
            },
        },
        separators=(",", ":"),
        sort_keys=True,
    )


class _Counter:
    def __init__(self) -> None:
        self.requests = 0
        self.objects = 0


def _list_pods(r2: R2Resource, day_prefix: str, count: _Counter) -> list[str]:
    pods: list[str] = []
    for page in r2.iter_keys(day_prefix, delimiter="/"):
        count.requests += 1
        pods += [p[len(day_prefix) :].rstrip("/") for p in page.prefixes]
    return pods


def _list_objects(
    r2: R2Resource, pod_prefix: str, start_after: str | None, count: _Counter
) -> list[tuple[str, float]]:
    found: list[tuple[str, float]] = []
    for page in r2.iter_keys(pod_prefix, start_after):
        count.requests += 1
        count.objects += len(page.objects)
        found += page.objects
    return found


def scan(
    r2: R2Resource,
    cursor: str | None,
    live_pods: set[str] | None,
    now: float | None = None,
    policy: ScanPolicy | None = None,
) -> ScanResult:
    """New object keys since `cursor`. The first scan (no cursor) only bookmarks what exists.

    `live_pods`: pod ids that can still write; None when unknown (then every pod of the scanned
    days is treated as live: correct, just more listing).
    """
    policy = policy or ScanPolicy()
    now = time.time() if now is None else now
    previous = load_cursor(cursor)
    bootstrapping = previous is None
    days_state = previous or {}
    count = _Counter()
    new_keys: list[str] = []
    window = day_strings(now, policy.overlap_days)
    for day in window:
        day_prefix = f"{r2.prefix}/{day}/"
        marks = days_state.setdefault(day, {})
        for pod in _list_pods(r2, day_prefix, count):
            mark = marks.get(pod)
            fresh = mark is None
            mark = mark or PodMark()
            is_live = live_pods is None or pod in live_pods or pod in ALWAYS_LIVE
            if is_live or (fresh and not bootstrapping):
                # A pod first seen after the bookmark may still be flushing even if RunPod no
                # longer lists it; at the bookmark, only what RunPod says is live counts.
                mark.live_at = now
            can_write = fresh or is_live or (now - mark.live_at) < policy.flush_grace_s
            if not can_write:
                mark.recent = {}  # only `last` matters for a pod that can no longer write
                if now - mark.live_at > policy.probe_dormant_s:
                    # Long gone from RunPod: nothing can write there any more; no request.
                    marks[pod] = mark
                    continue
            listing = _list_objects(
                r2, f"{day_prefix}{pod}/", None if can_write else mark.last or None, count
            )
            found = [(k, lm) for k, lm in listing if can_write is False or k not in mark.recent]
            if can_write and not fresh:
                # Already-seen keys fall outside `recent` once old; only newer ones count.
                floor = mark.newest - policy.recent_window_s
                found = [(k, lm) for k, lm in found if lm >= floor or k > mark.last]
            if not bootstrapping:
                new_keys += [k for k, _ in found]
            _advance(mark, listing if can_write else found, policy)
            marks[pod] = mark
    # Days that left the window can no longer be listed each tick; forget them.
    cutoff = window[0]
    days_state = {day: pods for day, pods in days_state.items() if day >= cutoff}
    return ScanResult(
        new_keys=sorted(set(new_keys)),
        cursor=dump_cursor(days_state),
        list_requests=count.requests,
        objects_listed=count.objects,
        bootstrapped=bootstrapping,
    )


def _advance(mark: PodMark, seen: list[tuple[str, float]], policy: ScanPolicy) -> None:
    for key, lm in seen:
        mark.last = max(mark.last, key)
        mark.newest = max(mark.newest, lm)
        mark.recent[key] = lm
    floor = mark.newest - policy.recent_window_s
    mark.recent = {k: lm for k, lm in mark.recent.items() if lm >= floor}
