"""`video_requests`: the YAML request files, validated, stored in R2, one partition each."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rp_pipeline.assets.partitions import VIDEO_REQUESTS_PARTITIONS
from rp_pipeline.request_store import save_request
from rp_pipeline.requests import load_requests, prompts_dir
from rp_pipeline.resources.r2 import R2Resource
from rp_pipeline.workflows import WorkflowParamError, validate_params


def _cell(text: str, limit: int = 80) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@asset(group_name="video", kinds={"yaml", "s3"})
def video_requests(context: AssetExecutionContext, r2: R2Resource) -> MaterializeResult:
    """Every request in `prompts/*.yaml` (or RP_PROMPTS_DIR): validated against its workflow,
    stored in R2 as `requests/<key>.json`, and added as a `generated_video` partition."""
    found = load_requests(prompts_dir())
    invalid: dict[str, str] = {}
    for key, request in found.items():
        try:
            validate_params(request.workflow, request.workflow_params())
        except WorkflowParamError as exc:
            invalid[key] = str(exc)
            context.log.warning(f"request {key} is invalid and was not added: {exc}")
    valid = {key: req for key, req in found.items() if key not in invalid}
    for key, request in valid.items():
        save_request(r2, key, request)
    existing = set(context.instance.get_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS))
    new_keys = [key for key in valid if key not in existing]
    if new_keys:
        context.instance.add_dynamic_partitions(VIDEO_REQUESTS_PARTITIONS, new_keys)
    rows = ["| key | workflow | seed | prompt |", "| --- | --- | --- | --- |"]
    rows += [
        f"| {key} | {req.workflow} | {req.seed if req.seed is not None else 'random'} | {_cell(req.prompt)} |"
        for key, req in valid.items()
    ]
    return MaterializeResult(
        metadata={
            "requests": MetadataValue.int(len(valid)),
            "new_partitions": MetadataValue.int(len(new_keys)),
            "invalid": MetadataValue.json(invalid),
            "table": MetadataValue.md("\n".join(rows)),
            "source": str(prompts_dir()),
        }
    )
