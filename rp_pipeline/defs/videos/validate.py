"""The first op of `generated_video`: every request of the run checked before any pod exists,
and the partitions that need no GPU (made, being made, or left in R2 by a dead run) set aside."""

from typing import Any

from dagster import Config, Failure, In, MetadataValue, Nothing, OpExecutionContext, Out, Output, op
from pydantic import Field

from rp_pipeline.defs.videos.pay_once import REMAKE_TAG, recovered_videos, triage
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.state import BatchState, plan_videos
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.settings import settings_problems_failure
from rp_pipeline.video_requests.model import RequestError
from rp_pipeline.video_requests.store import UnknownRequestError, resolve_requests
from rp_pipeline.workflows import workflow_problems


class RequestsConfig(Config):
    """Launch config: request specs by partition key (for partitions added in the UI)."""

    requests: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "partition key -> {prompt, workflow, negative_prompt, seed, params}; params are the "
            "workflow's own (`rp-launch workflow list` shows each workflow's)"
        ),
    )
    only: list[str] = Field(
        default_factory=list,
        description=(
            "Of the run's partition range, only these partitions (the batch schedule asks for "
            "exactly the pending ones); empty: the whole range."
        ),
    )
    remake: bool = Field(
        default=False,
        description=(
            "Generate again the partitions that are already materialized (and pay again); "
            "the run tag rp/remake=true does the same. Off: they are skipped."
        ),
    )


def run_partition_keys(context: OpExecutionContext) -> list[str]:
    if not context.has_partition_key_range and not context.has_partition_key:
        raise Failure("generated_video runs need partitions: pick video requests to generate")
    return list(context.partition_keys)


@op(ins={"video_requests": In(Nothing)}, out=Out(BatchState, is_required=False))
def validate_requests(
    context: OpExecutionContext,
    config: RequestsConfig,
    r2: R2Resource,
    settings: GenerationSettings,
):
    """Check the settings, then resolve and validate every request of the run, before any pod
    exists. Partitions already made or being made are skipped (see pay_once); with none left,
    no output: the later steps are skipped and the run succeeds without a pod."""
    if failure := settings_problems_failure(settings.settings_problems):
        raise failure
    keys = run_partition_keys(context)
    if config.only:
        keys = [key for key in keys if key in set(config.only)]
    remake = config.remake or context.run_tags.get(REMAKE_TAG, "").lower() == "true"
    found = triage(context.instance, context.dagster_run, keys, remake)
    for line in found.lines():
        context.log.info(line)
    try:
        specs = resolve_requests(r2, found.make, config.requests)
    except (UnknownRequestError, RequestError) as exc:
        raise Failure(f"no pod was launched: {exc}") from None
    keys = found.make
    if not remake:
        recovered = []
        for event in recovered_videos(
            r2, context.run_id, keys, {k: specs[k].to_dict() for k in keys}
        ):
            context.log.info(
                f"{event.partition}: its video is already in R2 (made by run "
                f"{str(event.metadata['recovered_from_run'].value)[:8]}, which died first); "
                "materialized from there, nothing generated"
            )
            recovered.append(event.partition)
            yield event
        keys = [key for key in keys if key not in recovered]
    if not keys:
        context.log.info("every partition is already materialized or being made; no pod is needed")
        return
    refuse_broken_workflows(context, sorted({specs[key].workflow for key in keys}))
    planned, problems = plan_videos(specs, keys, context.run_id)
    if problems:
        raise Failure(
            f"{len(problems)} request(s) invalid, no pod was launched: "
            + "; ".join(f"{key}: {msg}" for key, msg in problems.items()),
            metadata={key: MetadataValue.text(msg) for key, msg in problems.items()},
        )
    context.log.info(f"{len(planned)} request(s) valid: {', '.join(keys)}")
    yield Output(BatchState(run_id=context.run_id, videos=planned))


def refuse_broken_workflows(context: OpExecutionContext, names: list[str]) -> None:
    """Each workflow the run uses, checked once as a whole (node classes, links, values, model
    files against the catalogue and the manifest): a refused one fails the run before any pod,
    one log line per problem naming the node, input or file."""
    refused = {name: problems for name in names if (problems := workflow_problems(name))}
    if not refused:
        return
    for name, problems in refused.items():
        for line in problems:
            context.log.error(f"workflow {name!r}: {line}")
    raise Failure(
        "no pod was launched: "
        + "; ".join(f"workflow {name!r} is refused: {'; '.join(p)}" for name, p in refused.items()),
        metadata={
            f"workflow {name}": MetadataValue.text("\n".join(p)) for name, p in refused.items()
        },
    )
