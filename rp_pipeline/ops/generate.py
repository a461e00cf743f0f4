"""The op chain behind `generated_video`, one pod per run however many partitions it covers:

validate_requests -> launch_pod -> wait_for_ready -> submit_workflow -> harvest_outputs -> terminate_pod

Each op after launch_pod terminates the pod itself if it fails or is interrupted (run cancelled
from the UI), so teardown never depends on a later op running; `terminate_pod` ends the happy
path and is the op that materializes each partition, once the batch's billed seconds are known.
"""

import time
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    Config,
    Failure,
    In,
    MetadataValue,
    Nothing,
    OpExecutionContext,
    Out,
    Output,
    op,
)
from pydantic import Field

from rp_agent.keys import filename_prefix
from rp_pipeline.ops.harvest import Located, inspect_video, is_video_output, locate_output
from rp_pipeline.ops.metadata import observation_metadata, video_metadata
from rp_pipeline.ops.settings import GenerationSettings
from rp_pipeline.ops.state import BatchState, PlannedVideo, PodInfo, Submitted
from rp_pipeline.ops.teardown import terminate_on_exit_error, terminate_pod_now
from rp_pipeline.request_store import UnknownRequestError, resolve_requests
from rp_pipeline.resources.comfyui import (
    ComfyUIClient,
    PromptExecutionError,
    PromptValidationError,
)
from rp_pipeline.resources.r2 import R2Resource
from rp_pipeline.resources.runpod import RunPodResource
from rp_pipeline.video_requests import RequestError
from rp_pipeline.workflows import WorkflowParamError, render_workflow, validate_params

GENERATED_VIDEO = AssetKey("generated_video")
POD_POOL = "runpod_pods"


class RequestsConfig(Config):
    """Launch config: request specs by partition key (for partitions added in the UI)."""

    requests: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="partition key -> {prompt, workflow, negative_prompt, seed, params}",
    )


def run_partition_keys(context: OpExecutionContext) -> list[str]:
    if not context.has_partition_key_range and not context.has_partition_key:
        raise Failure("generated_video runs need partitions: pick video requests to generate")
    return list(context.partition_keys)


@op(ins={"video_requests": In(Nothing)}, out=Out(BatchState))
def validate_requests(context: OpExecutionContext, config: RequestsConfig, r2: R2Resource):
    """Resolve and validate every request of the run before any pod exists."""
    keys = run_partition_keys(context)
    try:
        specs = resolve_requests(r2, keys, config.requests)
    except (UnknownRequestError, RequestError) as exc:
        raise Failure(f"no pod was launched: {exc}") from None
    problems: dict[str, str] = {}
    planned = []
    for key in keys:
        request = specs[key]
        params = {
            **request.workflow_params(),
            "filename_prefix": filename_prefix(request.workflow, key, context.run_id),
        }
        try:
            validate_params(request.workflow, params)
            rendered = render_workflow(request.workflow, params)
        except WorkflowParamError as exc:
            problems[key] = str(exc)
            continue
        planned.append(
            PlannedVideo(
                partition_key=key,
                request={**request.to_dict(), "seed": rendered.seed},
                workflow_name=rendered.name,
                workflow_hash=rendered.workflow_hash,
                seed=rendered.seed,
                filename_prefix=rendered.filename_prefix,
                api_json=rendered.api_json,
            )
        )
    if problems:
        raise Failure(
            f"{len(problems)} request(s) invalid, no pod was launched: "
            + "; ".join(f"{key}: {msg}" for key, msg in problems.items()),
            metadata={key: MetadataValue.text(msg) for key, msg in problems.items()},
        )
    context.log.info(f"{len(planned)} request(s) valid: {', '.join(keys)}")
    return BatchState(run_id=context.run_id, videos=planned)


def pod_env(settings: GenerationSettings, r2: R2Resource, run_id: str) -> dict[str, str]:
    env = {
        "ENABLE_R2_SYNC": "true" if settings.enable_r2_sync else "false",
        "R2_ENDPOINT": r2.endpoint,
        "R2_BUCKET": r2.bucket,
        "R2_PREFIX": r2.prefix,
        "DAGSTER_RUN_ID": run_id,
        **settings.extra_pod_env,
    }
    for name, secret in settings.pod_secret_refs.items():
        env[name] = "{{ RUNPOD_SECRET_" + secret + " }}"
    return env


def running_cost_per_hr(client: Any, exclude: str | None = None) -> float:
    return sum(
        float(pod.cost_per_hr or 0)
        for pod in client.list_pods()
        if pod.id != exclude and str(pod.desired_status).upper() == "RUNNING"
    )


def pods_of_live_runs(context: OpExecutionContext, client: Any) -> list[str]:
    """Our pods whose Dagster run is still in progress (other runs' pods hold pod slots;
    orphans are the reaper's and do not)."""
    from rp_pipeline.sensors.reaper import GONE, IN_PROGRESS, pod_run_id

    busy = []
    for pod in client.list_pods():
        run_id = pod_run_id(pod)
        if not run_id or run_id == context.run_id or str(pod.desired_status).upper() in GONE:
            continue
        run = context.instance.get_run_by_id(run_id)
        if run is not None and run.status in IN_PROGRESS:
            busy.append(pod.id)
    return busy


def wait_for_pod_slot(
    context: OpExecutionContext, client: Any, settings: GenerationSettings
) -> None:
    give_up = time.monotonic() + settings.pod_slot_wait_s
    while len(busy := pods_of_live_runs(context, client)) >= settings.max_live_pods:
        if time.monotonic() >= give_up:
            raise Failure(
                f"{len(busy)} pod(s) of other runs still live ({', '.join(busy)}); limit is "
                f"{settings.max_live_pods} (RP_MAX_PODS)"
            )
        context.log.info(f"waiting for a pod slot: {len(busy)} of {settings.max_live_pods} in use")
        time.sleep(5.0)


@op(out=Out(BatchState), pool=POD_POOL)
def launch_pod(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
) -> BatchState:
    """One pod for the whole batch, once a pod slot is free; refused when the account already
    spends too much."""
    client = runpod.get_client()
    wait_for_pod_slot(context, client, settings)
    spend = running_cost_per_hr(client)
    if spend + 1e-9 >= settings.max_total_cost_per_hr:
        raise Failure(
            f"running pods already cost ${spend:.2f}/h (limit ${settings.max_total_cost_per_hr:.2f}/h)"
        )
    spec = runpod.pod_spec(
        env={**runpod.env, **pod_env(settings, r2, context.run_id)},
        name=f"video-x{len(state.videos)}",
    )
    launched_at = time.time()
    pod = client.launch(spec, context.run_id)
    state.pod = PodInfo(
        pod_id=pod.id,
        name=pod.name,
        gpu_type=str(pod.gpu_type or ""),
        cost_per_hr=float(pod.cost_per_hr or 0.0),
        launched_at=launched_at,
    )
    with terminate_on_exit_error(client, state, context.log):
        if running_cost_per_hr(client, exclude=pod.id) + state.pod.cost_per_hr > (
            settings.max_total_cost_per_hr + 1e-9
        ):
            raise Failure(
                f"pod {pod.id} would take spend over the ${settings.max_total_cost_per_hr}/h cap"
            )
    context.log.info(f"launched pod {pod.id} ({state.pod.gpu_type}, ${state.pod.cost_per_hr}/h)")
    context.add_output_metadata({"pod_id": pod.id, "gpu_type": state.pod.gpu_type})
    return state


@op(out=Out(BatchState))
def wait_for_ready(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    settings: GenerationSettings,
) -> BatchState:
    """RUNNING is not ready: wait for the runtime, the ComfyUI port and ComfyUI answering."""
    assert state.pod is not None
    client = runpod.get_client()
    with terminate_on_exit_error(client, state, context.log):
        ready = client.wait_until_ready(
            state.pod.pod_id,
            port=settings.comfyui_port,
            deadline_s=settings.ready_deadline_s,
            terminate_on_timeout=True,
        )
        state.comfyui_url = ready.comfyui_url
        state.ready_at = time.time()
        boot_s = state.ready_at - state.pod.launched_at
        context.log.info(f"pod {state.pod.pod_id} ready after {boot_s:.1f} s")
        context.add_output_metadata({"boot_s": round(boot_s, 3)})
    return state


@op(out=Out(BatchState))
def submit_workflow(
    context: OpExecutionContext, state: BatchState, runpod: RunPodResource
) -> BatchState:
    """Queue every prompt of the batch at once: the pod never idles between videos."""
    assert state.pod is not None and state.comfyui_url
    with terminate_on_exit_error(runpod.get_client(), state, context.log):
        comfy = ComfyUIClient(state.comfyui_url)
        for video in state.videos:
            sub = comfy.submit(video.api_json)
            state.submitted[video.partition_key] = Submitted(
                sub.prompt_id, int(sub.number), float(sub.submitted_at)
            )
            context.log.info(f"queued {video.partition_key} as prompt {sub.prompt_id}")
    return state


@op(out=Out(BatchState))
def harvest_outputs(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
):
    """Wait for each prompt in queue order and collect its video from R2 as it lands; the pod
    is terminated as soon as the batch's last video is durably in R2 (probing and posters read
    R2, not the pod, so they do not keep a GPU billing)."""
    assert state.pod is not None and state.comfyui_url
    client = runpod.get_client()
    with terminate_on_exit_error(client, state, context.log):
        comfy = ComfyUIClient(state.comfyui_url)
        last = len(state.videos) - 1
        for index, video in enumerate(state.videos):
            key = video.partition_key
            sub = state.submitted[key]
            outcome = _await_video(context, comfy, r2, state, key, sub, settings)
            state.last_object_at = time.time()
            if index == last:
                state.terminated_at = terminate_pod_now(client, state.pod.pod_id, context.log)
            if outcome is None:
                continue
            located, result = outcome
            queue_wait = (
                round(float(result.started_at) - sub.submitted_at, 3) if result.started_at else None
            )
            record = inspect_video(
                r2=r2,
                located=located,
                partition_key=key,
                prompt_id=sub.prompt_id,
                generation_time_s=result.generation_time_s,
                queue_wait_s=max(0.0, queue_wait) if queue_wait is not None else None,
            )
            state.records[key] = record
            context.log.info(f"{key}: {record.r2_key} ({record.r2_source}, {record.size_bytes} B)")
            # The video is in R2 now: say so per partition at once; the materialization follows
            # at terminate_pod, when the pod's billed seconds (and so cost) are known.
            yield AssetObservation(
                asset_key=GENERATED_VIDEO, partition=key, metadata=observation_metadata(record)
            )
    yield Output(state)


def _await_video(
    context: OpExecutionContext,
    comfy: ComfyUIClient,
    r2: R2Resource,
    state: BatchState,
    key: str,
    sub: Submitted,
    settings: GenerationSettings,
) -> tuple[Located, Any] | None:
    """The prompt's result and its video located in R2, or None (recorded as a failure) when
    ComfyUI rejected or failed the prompt or produced no video."""
    assert state.pod is not None
    try:
        result = comfy.wait(sub.prompt_id, deadline_s=settings.prompt_deadline_s)
    except (PromptExecutionError, PromptValidationError) as exc:
        state.failures[key] = f"{type(exc).__name__}: {exc}"
        context.log.error(f"{key}: {state.failures[key]}")
        return None
    videos = [out for out in result.outputs if is_video_output(out)]
    if result.status != "success" or not videos:
        state.failures[key] = f"ComfyUI status {result.status}, {len(videos)} video output(s)"
        context.log.error(f"{key}: {state.failures[key]}")
        return None
    located = locate_output(
        r2=r2,
        comfy=comfy,
        output=videos[0],
        pod_id=state.pod.pod_id,
        finished_at=float(result.finished_at or time.time()),
        sync_enabled=settings.enable_r2_sync,
        deadline_s=settings.r2_object_deadline_s,
    )
    return located, result


@op(out=Out(is_required=False))
def terminate_pod(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
):
    """Terminate right after the last object landed, then materialize every partition with
    its share of the pod's cost; fail the run if some partitions produced no video."""
    assert state.pod is not None
    client = runpod.get_client()
    # Normally harvest_outputs already terminated; this confirms it (terminate is idempotent).
    called_at = terminate_pod_now(client, state.pod.pod_id, context.log)
    terminated_at = state.terminated_at or called_at
    billed_s = max(0.0, terminated_at - state.pod.launched_at)
    cost_usd = state.pod.cost_per_hr * billed_s / 3600.0
    share = cost_usd / max(1, len(state.videos))
    # From the moment the batch's last video was visible in R2 to the terminate call.
    last_visible = max((r.visible_at for r in state.records.values()), default=None)
    terminate_lag = round(terminated_at - last_visible, 3) if last_visible else None
    context.log.info(
        f"pod {state.pod.pod_id} billed {billed_s:.1f} s = ${cost_usd:.4f} for {len(state.videos)} video(s)"
    )
    planned = {video.partition_key: video for video in state.videos}
    for key, record in state.records.items():
        yield AssetMaterialization(
            asset_key=GENERATED_VIDEO,
            partition=key,
            metadata=video_metadata(
                record=record,
                video=planned[key],
                pod=state.pod,
                r2=r2,
                billed_s=billed_s,
                cost_usd=share,
                batch_size=len(state.videos),
                terminate_lag_s=terminate_lag,
            ),
        )
    if state.failures:
        raise Failure(
            f"{len(state.failures)} of {len(state.videos)} video(s) failed; pod terminated",
            metadata={key: MetadataValue.text(msg) for key, msg in state.failures.items()},
        )
