"""Work done side by side on threads, with a callback while waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any


def in_parallel(
    items: Iterable[Any],
    work: Callable[[Any], Any],
    while_waiting: Callable[[], None] | None = None,
    every_s: float = 2.0,
) -> list[tuple[Any, Any]]:
    """(item, result or exception) for each item, worked side by side; `while_waiting` (e.g.
    forwarding the pods' log lines) runs on this thread every `every_s` until all are done."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="fleet") as pool:
        futures = [(item, pool.submit(work, item)) for item in items]
        pending = {future for _, future in futures}
        while pending and while_waiting is not None:
            _, pending = wait(pending, timeout=every_s)
            while_waiting()
        out = []
        for item, future in futures:
            try:
                out.append((item, future.result()))
            except BaseException as exc:
                out.append((item, exc))
        return out
