"""Which partitions of a retried run are already done: a retry (automatic, or a re-execution
from the UI) re-runs every step of its parent, so without this it would regenerate, and pay
for, every video the failed run did produce."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance

PARENT_RUN_TAG = "dagster/parent_run_id"


def parent_run_id(run: Any) -> str | None:
    return run.parent_run_id or run.tags.get(PARENT_RUN_TAG) or None


def materialized_by_ancestors(
    instance: DagsterInstance, run: Any, asset_key: AssetKey
) -> dict[str, str]:
    """{partition: id of the ancestor run that materialized it}, walking parent runs up to the
    first run of the chain (a retry of a retry skips what any earlier attempt produced)."""
    done: dict[str, str] = {}
    seen: set[str] = set()
    ancestor = parent_run_id(run)
    while ancestor and ancestor not in seen:
        seen.add(ancestor)
        cursor = None
        while True:
            page = instance.get_records_for_run(
                ancestor, cursor=cursor, of_type=DagsterEventType.ASSET_MATERIALIZATION
            )
            for record in page.records:
                event = record.event_log_entry.dagster_event
                mat = event.step_materialization_data.materialization if event else None
                if mat is not None and mat.asset_key == asset_key and mat.partition:
                    done.setdefault(mat.partition, ancestor)
            if not page.has_more:
                break
            cursor = page.cursor
        parent = instance.get_run_by_id(ancestor)
        ancestor = parent_run_id(parent) if parent is not None else None
    return done
