"""The code location: every domain's definitions under `defs/`, the resources, the executor.

Each folder of `defs/` lists what it holds in its `defs.py` (assets, checks, jobs, sensors,
schedules); `defs/resources.py` builds the resources from `rp_pipeline.settings` for RP_ENV
(devstack or production). A bad setting never stops the location from loading: it is logged,
shown on the `settings` resource and fails each generation run in its first op.
"""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from rp_pipeline.defs.costs import defs as costs
from rp_pipeline.defs.previews import defs as previews
from rp_pipeline.defs.requests import defs as requests
from rp_pipeline.defs.resources import load_resources, resources_for
from rp_pipeline.defs.teardown import defs as teardown
from rp_pipeline.defs.videos import defs as videos

__all__ = ["build_definitions", "defs", "resources_for"]


def build_definitions(env: str | None = None) -> Definitions:
    """The location for `env` (default: RP_ENV, else devstack)."""
    return Definitions.merge(
        requests.defs,
        videos.defs,
        previews.defs,
        teardown.defs,
        costs.defs,
        Definitions(
            resources=load_resources(env),
            # One process per run: ops hand the pod over in memory-cheap pickles, cancellation
            # reaches the running op as DagsterExecutionInterruptedError, and 2-core boxes stay calm.
            executor=in_process_executor,
        ),
    )


defs = build_definitions()
