"""`video_requests`: the YAML request files, validated, stored in R2, one partition each."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.video_requests.model import prompts_dir
from rp_pipeline.video_requests.store import register_requests


def _cell(text: str, limit: int = 80) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@asset(group_name="video", kinds={"yaml", "s3"})
def video_requests(context: AssetExecutionContext, r2: R2Resource) -> MaterializeResult:
    """Every request in `prompts/*.yaml` (or RP_PROMPTS_DIR): validated against its workflow,
    stored in R2 as `requests/<key>.json`, and added as a `generated_video` partition. A bad
    entry is reported (one line: file, entry index, what is wrong) and the others register."""
    done = register_requests(context.instance, r2, prompts_dir())
    for problem in done.problems:
        context.log.warning(f"request not registered: {problem}")
    rows = ["| key | workflow | seed | prompt |", "| --- | --- | --- | --- |"]
    rows += [
        f"| {key} | {req.workflow} | {req.seed if req.seed is not None else 'random'} "
        f"| {_cell(req.prompt)} |"
        for key, req in done.requests.items()
    ]
    return MaterializeResult(
        metadata={
            "requests": MetadataValue.int(len(done.requests)),
            "new_partitions": MetadataValue.int(len(done.new_keys)),
            "invalid": MetadataValue.int(len(done.problems)),
            "problems": MetadataValue.md("\n".join(f"- {_cell(p, 300)}" for p in done.problems)),
            "table": MetadataValue.md("\n".join(rows)),
            "source": str(prompts_dir()),
        }
    )
