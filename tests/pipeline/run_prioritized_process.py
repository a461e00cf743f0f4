"""A generated_video run with a `dagster/priority` tag, in its own process (runs waiting for a pod
slot at the same time, as a run queue starts them).

usage: python -m tests.pipeline.run_prioritized_process PARTITION_KEY PRIORITY
(DAGSTER_HOME, RP_PROMPTS_DIR, RP_MAX_PODS and the devstack variables come from the environment)
"""

from __future__ import annotations

import sys

from dagster import DagsterInstance

from rp_pipeline.definitions import resources_for
from tests.pipeline.helpers import generate


def main() -> int:
    key, priority = sys.argv[1], sys.argv[2]
    with DagsterInstance.get() as instance:
        result = generate(
            instance, resources_for("devstack"), [key], tags={"dagster/priority": priority}
        )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
