"""A generated_video run in its own process, for tests that interrupt it like a UI cancel does.

usage: python -m tests.pipeline.run_batch_process PARTITION_KEY [POD_ENV_JSON]
(DAGSTER_HOME, RP_PROMPTS_DIR and the devstack variables come from the environment)
"""

from __future__ import annotations

import json
import sys

from dagster import DagsterInstance

from rp_pipeline.definitions import resources_for
from tests.pipeline.helpers import generate, with_settings


def main() -> int:
    key = sys.argv[1]
    pod_env = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    resources = with_settings(resources_for("devstack"), extra_pod_env=pod_env)
    with DagsterInstance.get() as instance:
        result = generate(instance, resources, [key])
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
