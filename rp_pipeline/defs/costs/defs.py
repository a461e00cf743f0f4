"""What Dagster loads for costs: the measured cost table and the sensor that refreshes it."""

from dagster import Definitions

from rp_pipeline.defs.costs.assets import gpu_cost_table
from rp_pipeline.defs.costs.sensors import gpu_costs_on_new_videos, refresh_gpu_costs

defs = Definitions(
    assets=[gpu_cost_table],
    jobs=[refresh_gpu_costs],
    sensors=[gpu_costs_on_new_videos],
)
