"""`gpu_cost_table`: what a video has cost on each GPU type, measured from `generated_video`.

Its materialization shows the cost table (see `rp_pipeline.money.cost_table`) as a table in the
UI: one row per GPU type x workflow x resolution x frame class, and one per GPU type x workflow
over every size. RP_GPU_CHOICE reads the same figures straight from the instance before each run,
so the table is what a user looks at; no run waits for it.
"""

from collections.abc import Sequence

from dagster import (
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from rp_pipeline.asset_keys import GENERATED_VIDEO
from rp_pipeline.money.cost_table import CostRow, cost_rows, read_events, samples

COLUMNS = (
    TableColumn("gpu_type", "string", description="RunPod GPU type id"),
    TableColumn("workflow", "string"),
    TableColumn("resolution", "string", description="width x height ('all': every size)"),
    TableColumn("frames", "string", description="frame-count class ('all': every length)"),
    TableColumn("videos", "int", description="videos measured"),
    TableColumn("median_generation_s", "float", description="ComfyUI run time of the prompt"),
    TableColumn(
        "median_billed_s",
        "float",
        description="pod seconds billed per video, boot and idle shares in",
    ),
    TableColumn("usd_per_video", "float", description="billed dollars over videos"),
)


def cost_table_metadata(rows: Sequence[CostRow]) -> MetadataValue:
    return MetadataValue.table(
        records=[TableRecord(row.as_dict()) for row in rows],
        schema=TableSchema(columns=list(COLUMNS)),
    )


@asset(
    deps=[GENERATED_VIDEO],
    # The videos' own group: a second group would make Dagster's global lineage open collapsed
    # into two group boxes, hiding the request -> video -> preview -> catalog chain.
    group_name="video",
    description="Measured cost per video for each GPU type and workflow (from generated_video).",
)
def gpu_cost_table(context: AssetExecutionContext) -> MaterializeResult:
    videos = samples(*read_events(context.instance))
    by_size, by_workflow = cost_rows(videos), cost_rows(videos, by_size=False)
    context.log.info(
        f"{len(videos)} video(s) measured on {len({v.gpu_type for v in videos})} GPU type(s)"
    )
    return MaterializeResult(
        metadata={
            "cost_per_video": cost_table_metadata(by_size),
            "cost_per_video_by_workflow": cost_table_metadata(by_workflow),
            "videos": MetadataValue.int(len(videos)),
        }
    )
