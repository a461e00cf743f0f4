"""What Dagster loads for teardown: the sensors that end pods a run no longer needs."""

from dagster import Definitions

from rp_pipeline.defs.teardown.sensors import (
    pod_reaper,
    terminate_pods_of_canceled_run,
    terminate_pods_of_failed_run,
)

defs = Definitions(
    sensors=[pod_reaper, terminate_pods_of_failed_run, terminate_pods_of_canceled_run]
)
