"""The op chain behind `generated_video`; each op handles the run's whole fleet of k pods:

validate_requests -> launch_pod -> wait_for_ready -> submit_workflow -> harvest_outputs -> terminate_pod

launch_pod launches k pods side by side (k = min(ceil(N / videos_per_pod), RP_MAX_PODS, what the
cost cap allows)), wait_for_ready waits for all of them, submit_workflow primes each ready pod,
harvest_outputs runs one worker thread per pod pulling from one shared queue and materializes
each video the moment it is in R2, and terminate_pod confirms every pod is gone, settles the
cost per partition and fails the run naming the partitions that failed.

Every op terminates the pods it holds if it fails or is interrupted (run cancelled from the UI),
so teardown never depends on a later op running.
"""

import contextlib
import math
import queue
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckEvaluation,
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
from rp_pipeline.defs.videos.checks import video_check_evaluations
from rp_pipeline.defs.videos.metadata import preempted_metadata, settled_metadata, video_metadata
from rp_pipeline.defs.videos.retry import materialized_by_ancestors
from rp_pipeline.fleet.billing import pod_seconds, settled_costs
from rp_pipeline.fleet.external import pods_for
from rp_pipeline.fleet.launcher import Launcher, idle_room, running_cost_per_hr
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.podlogs import FORWARD_EVERY_S, PodLogForwarder
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.slots import POD_POOL, PodSlots
from rp_pipeline.fleet.state import BatchState, PlannedVideo, PodInfo, Submitted
from rp_pipeline.fleet.sweep import sweep_run_pods
from rp_pipeline.fleet.teardown import remembered_interrupts, terminate_confirmed
from rp_pipeline.fleet.threads import in_parallel
from rp_pipeline.fleet.worker import PROMPTS_PER_POD, Fleet, PodWorker, comfy_client
from rp_pipeline.integrations.comfyui.client import ComfyUIError, PromptValidationError
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.resource import RunPodResource, RunPodTransientError
from rp_pipeline.money.budget import DEFAULT_VIDEO_S, BudgetExceeded, BudgetSettings, RunBudget
from rp_pipeline.money.plan import plan_run
from rp_pipeline.video_requests.model import RequestError
from rp_pipeline.video_requests.store import UnknownRequestError, resolve_requests
from rp_pipeline.workflows import WorkflowParamError, render_workflow, validate_params

GENERATED_VIDEO = AssetKey("generated_video")
__all__ = ["POD_POOL"]


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


@op(ins={"video_requests": In(Nothing)}, out=Out(BatchState, is_required=False))
def validate_requests(context: OpExecutionContext, config: RequestsConfig, r2: R2Resource):
    """Resolve and validate every request of the run before any pod exists. A retried run
    drops the partitions an earlier attempt already materialized; with none left, no output:
    the later steps are skipped and the run succeeds without a pod."""
    keys = run_partition_keys(context)
    done = materialized_by_ancestors(context.instance, context.dagster_run, GENERATED_VIDEO)
    if skipped := [key for key in keys if key in done]:
        keys = [key for key in keys if key not in done]
        context.log.info(
            f"retry: skipping {len(skipped)} partition(s) an earlier attempt materialized: "
            + ", ".join(f"{key} (run {done[key][:8]})" for key in skipped)
        )
        if not keys:
            context.log.info("retry: every partition is already materialized; no pod is needed")
            return
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
    yield Output(BatchState(run_id=context.run_id, videos=planned))


def pod_env(settings: GenerationSettings, r2: R2Resource, run_id: str) -> dict[str, str]:
    env = {
        "ENABLE_R2_SYNC": "true" if settings.enable_r2_sync else "false",
        "R2_ENDPOINT": r2.endpoint,
        "R2_BUCKET": r2.bucket,
        "R2_PREFIX": r2.prefix,
        "DAGSTER_RUN_ID": run_id,
        # The pod's own boot lease matches the run's, so a run that dies before its first
        # renewal still ends its pods this soon.
        "RP_POD_LEASE_S": str(int(settings.pod_lease_s)),
        **settings.extra_pod_env,
    }
    for name, secret in settings.pod_secret_refs.items():
        env[name] = "{{ RUNPOD_SECRET_" + secret + " }}"
    return env


def patiently(call: Any, what: str, wait_s: float = 60.0) -> Any:
    """A read of the RunPod API, retried while RunPod answers 5xx / is unreachable (reads are
    safe to repeat); one clear Failure if it stays down."""
    give_up = time.monotonic() + wait_s
    while True:
        try:
            return call()
        except RunPodTransientError as exc:
            if time.monotonic() >= give_up:
                raise Failure(
                    f"RunPod's API kept failing for {wait_s:.0f} s while {what} ({exc}); "
                    "no pod was launched"
                ) from None
            time.sleep(2.0)


def pods_within_cost_cap(
    client: Any, runpod: RunPodResource, cap: float, idle_cost_per_hr: float = 0.0
) -> tuple[int, float]:
    """(how many more pods fit under the account-wide $/h cap, the spend now). A pod is assumed
    to cost its first GPU type's price; a fallback to a dearer GPU is caught after the create.
    Our idle pods' $/h is room: the run adopts them or ends them to make room."""
    running = patiently(lambda: running_cost_per_hr(client), "reading the running pods' cost")
    spend = max(0.0, running - idle_cost_per_hr)
    catalog = {gpu.id: gpu for gpu in patiently(client.gpu_types, "reading GPU prices")}
    prices = [
        price
        for gpu_id in runpod.gpu_types
        if gpu_id in catalog and (price := catalog[gpu_id].price_for(runpod.cloud_type))
    ]
    price = prices[0] if prices else (runpod.max_cost_per_hr or 0.0)
    if price <= 0:
        return (1 if spend < cap else 0), spend
    return max(0, math.floor((cap - spend + 1e-9) / price)), spend


def fleet_size(n_videos: int, settings: GenerationSettings, by_cost: int) -> int:
    """k = min(ceil(N / videos_per_pod), RP_MAX_PODS, pods the cost cap allows)."""
    return max(
        0,
        min(math.ceil(n_videos / max(1, settings.videos_per_pod)), settings.max_live_pods, by_cost),
    )


def run_budget(state: BatchState) -> RunBudget:
    """The run's budget, rebuilt in each op from the plan; every pod of the run bills it."""
    budget: RunBudget = (
        state.plan.budget()
        if state.plan is not None
        else RunBudget(BudgetSettings(), spent_today_usd=0.0, video_seconds=DEFAULT_VIDEO_S)
    )
    for pod in state.pods.values():
        budget.pod_started(pod.pod_id, pod.cost_per_hr, at=pod.launched_at)
        if pod.terminated_at is not None:
            budget.pod_stopped(pod.pod_id, at=pod.terminated_at)
    return budget


def _launcher(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    leases: LeaseKeeper,
    budget: RunBudget | None = None,
) -> Launcher:
    """The run's pod launcher, the same in every op that starts or readies pods."""
    return Launcher(
        runpod=runpod,
        settings=settings,
        run_id=context.run_id,
        leases=leases,
        base_env={**runpod.env, **pod_env(settings, r2, context.run_id)},
        batch_size=len(state.videos),
        plan=state.plan,
        budget=budget,
    )


def _slots(context: OpExecutionContext, settings: GenerationSettings) -> PodSlots:
    return PodSlots(context.instance, context.run_id, settings.max_live_pods)


@contextlib.contextmanager
def fleet_teardown(
    context: OpExecutionContext,
    client: Any,
    state: BatchState,
    settings: GenerationSettings,
    leases: LeaseKeeper,
) -> Iterator[None]:
    """Any exception leaving the block (incl. DagsterExecutionInterruptedError when the run is
    cancelled, a BaseException) terminates every pod of the run before propagating."""
    try:
        yield
    except BaseException:
        context.log.error("op failed or was interrupted; terminating every pod of the run")
        live = [pod for pod in state.pods.values() if not pod.terminate_confirmed]
        in_parallel(
            live, lambda pod: terminate_confirmed(client, pod, settings.terminate_confirm_s)
        )
        slots = _slots(context, settings)
        for pod in live:
            leases.release(pod.pod_id)
            if pod.terminate_confirmed:
                slots.free(pod.slot_key)
        try:
            # Spare every pod the run knows: one it kept warm is idle now, and may already be
            # another run's adopted pod (its name still carries this run's id).
            sweep_run_pods(
                client, context.run_id, keep=state.pods, wait_s=30.0,
                confirm_s=settings.terminate_confirm_s,
            )  # fmt: skip
        except Exception as exc:  # the failure sensor and reaper try again
            context.log.error(f"could not list this run's pods to sweep them: {exc}")
        raise


@op(out=Out(BatchState))
def launch_pod(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
) -> BatchState:
    """Launch the run's k pods side by side, each holding a `runpod_pods` slot, each with its own
    GPU fallback and a fresh token; refused when the account already spends too much."""
    runpod, settings = pods_for(runpod, comfyui, settings)
    client = runpod.get_client()
    n = len(state.videos)
    idle = idle_room(client, r2, runpod)
    by_cost, spend = pods_within_cost_cap(
        client, runpod, settings.max_total_cost_per_hr, idle.cost_per_hr
    )
    if by_cost < 1:
        raise Failure(
            f"running pods already cost ${spend:.2f}/h; one more would pass the "
            f"${settings.max_total_cost_per_hr:.2f}/h cap (RP_MAX_TOTAL_COST_PER_HR)"
        )
    want = fleet_size(n, settings, by_cost)
    catalog = patiently(client.gpu_types, "reading GPU prices")
    state.plan = plan_run(
        context.instance, catalog, list(runpod.gpu_types), runpod.cloud_type,
        videos=n, pods=max(0, want - idle.fitting),
        fallback_price=float(runpod.max_cost_per_hr or 0.0),
    )  # fmt: skip
    budget = run_budget(state)
    slots = _slots(context, settings)
    waited = {"at": 0.0}

    def on_wait() -> None:
        if time.monotonic() - waited["at"] >= 30:
            waited["at"] = time.monotonic()
            context.log.info(f"waiting for a pod slot (pool {POD_POOL}, limit {slots.limit})")

    claimed = slots.claim(want, settings.pod_slot_wait_s, on_wait)
    if not claimed:
        raise Failure(
            f"no pod slot came free within {settings.pod_slot_wait_s:.0f} s: the {slots.limit} "
            f"slot(s) of pool {POD_POOL} (RP_MAX_PODS) are held by other runs' pods"
        )
    context.log.info(
        f"{n} video(s): launching {len(claimed)} pod(s) (wanted {want}: "
        f"ceil({n}/{settings.videos_per_pod}) per pod, RP_MAX_PODS={settings.max_live_pods}, "
        f"{by_cost} under the cost cap)"
    )
    leases = LeaseKeeper(r2, context.run_id, settings.pod_lease_s)
    launcher = _launcher(context, state, runpod, r2, settings, leases, budget)
    errors: dict[str, str] = {}
    with leases, fleet_teardown(context, client, state, settings, leases):
        try:
            for slot, result in in_parallel(claimed, launcher.launch):
                if isinstance(result, PodInfo):
                    state.pods[result.pod_id] = result
                    how = (
                        f"adopted warm pod {result.pod_id} (idle {result.adopted_idle_s:.0f} s)"
                        if result.adopted_from_run
                        else f"launched pod {result.pod_id}"
                    )
                    context.log.info(
                        f"{how} ({result.gpu_type}, ${result.cost_per_hr}/h) in slot {slot}"
                    )
                else:
                    errors[slot] = str(result)
                    slots.free(slot)
                    context.log.error(f"pod for slot {slot} not launched: {result}")
            _enforce_cost_cap(context, client, state, settings, leases, slots)
        finally:
            # The op owns every pod named for its run from the moment it asked for one: a pod
            # whose create answer was lost is terminated here, never left to bill.
            strays = sweep_run_pods(
                client, context.run_id, keep=state.pods, confirm_s=settings.terminate_confirm_s
            )
            if strays:
                context.log.warning(f"terminated pod(s) of this run nobody tracked: {strays}")
        if not state.pods:
            raise Failure(
                f"no pod could be launched ({'; '.join(sorted(set(errors.values())))}); "
                "no pod of this run is left running"
            )
    context.add_output_metadata(
        {
            "pods": MetadataValue.int(len(state.pods)),
            "pod_ids": ", ".join(state.pods),
            "gpu_types": ", ".join(sorted({p.gpu_type for p in state.pods.values()})),
        }
    )
    return state


def _enforce_cost_cap(
    context: OpExecutionContext,
    client: Any,
    state: BatchState,
    settings: GenerationSettings,
    leases: LeaseKeeper,
    slots: PodSlots,
) -> None:
    """After the creates: if GPU fallbacks took spend over the cap, drop our newest pods."""
    try:
        spend = patiently(lambda: running_cost_per_hr(client), "checking the cost cap", 30.0)
    except Failure:  # the fleet was sized under the cap before the creates; keep it
        context.log.warning("could not re-check the cost cap after launch: RunPod's API is down")
        return
    for pod in reversed(list(state.pods.values())):
        if spend <= settings.max_total_cost_per_hr + 1e-9 or len(state.pods) == 1:
            break
        context.log.warning(
            f"pod {pod.pod_id} takes spend to ${spend:.2f}/h, over the "
            f"${settings.max_total_cost_per_hr:.2f}/h cap; terminating it"
        )
        terminate_confirmed(client, pod, settings.terminate_confirm_s)
        leases.release(pod.pod_id)
        slots.free(pod.slot_key)
        spend -= pod.cost_per_hr
        del state.pods[pod.pod_id]
    if spend > settings.max_total_cost_per_hr + 1e-9:
        raise Failure(
            f"running pods cost ${spend:.2f}/h, over the ${settings.max_total_cost_per_hr:.2f}/h "
            "cap (RP_MAX_TOTAL_COST_PER_HR)"
        )


@op(out=Out(BatchState))
def wait_for_ready(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
) -> BatchState:
    """RUNNING is not ready: wait for each pod's runtime, port and ComfyUI answering, side by
    side. A pod that never gets there is terminated and the others carry on."""
    runpod, settings = pods_for(runpod, comfyui, settings)
    client = runpod.get_client()
    live = state.live_pods()
    leases = LeaseKeeper(r2, context.run_id, settings.pod_lease_s, [p.pod_id for p in live])
    launcher = _launcher(context, state, runpod, r2, settings, leases)
    slots = _slots(context, settings)
    forwarder = PodLogForwarder(r2, context.log, state.log_cursors)
    with leases, fleet_teardown(context, client, state, settings, leases):
        booting = in_parallel(
            live, launcher.ready, lambda: forwarder.poll(list(state.pods)), FORWARD_EVERY_S
        )
        forwarder.poll(list(state.pods), force=True)  # what the pods said while booting
        for pod, result in booting:
            if isinstance(result, PodInfo):
                boot_s = (pod.ready_at or time.time()) - pod.launched_at - pod.adopted_idle_s
                context.log.info(f"pod {pod.pod_id} ready after {boot_s:.1f} s")
                continue
            pod.failure = f"never ready: {result}"
            context.log.error(f"pod {pod.pod_id} {pod.failure}")
            terminate_confirmed(client, pod, settings.terminate_confirm_s)
            leases.release(pod.pod_id)
            if pod.terminate_confirmed:
                slots.free(pod.slot_key)
        if not state.live_pods():
            reasons = "; ".join(f"{p.pod_id}: {p.failure}" for p in state.pods.values())
            raise Failure(f"no pod became ready ({reasons}); every pod is terminated")
    ready = state.live_pods()
    context.add_output_metadata(
        {
            "ready_pods": MetadataValue.int(len(ready)),
            "boot_s": ", ".join(
                f"{(p.ready_at or 0) - p.launched_at - p.adopted_idle_s:.1f}" for p in ready
            ),
        }
    )
    return state


@op(out=Out(BatchState))
def submit_workflow(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
) -> BatchState:
    """Prime each ready pod with its first prompts (the running one + one queued behind it);
    the rest stay in the shared queue that harvest_outputs' workers pull from."""
    runpod, settings = pods_for(runpod, comfyui, settings)
    client = runpod.get_client()
    live = state.live_pods()
    todo = deque(state.partition_keys)
    leases = LeaseKeeper(r2, context.run_id, settings.pod_lease_s, [p.pod_id for p in live])
    with leases, fleet_teardown(context, client, state, settings, leases):
        clients = {pod.pod_id: comfy_client(comfyui, client, pod) for pod in live}
        budget = run_budget(state)
        skip: set[str] = set()
        for _ in range(PROMPTS_PER_POD):
            for pod in live:
                if not todo or pod.pod_id in skip:
                    continue
                key = todo.popleft()
                try:
                    budget.start_prompt(pod.cost_per_hr)
                except BudgetExceeded as exc:  # fail it and the rest of the queue: no pod runs them
                    for failed in [key, *todo]:
                        state.failures[failed] = str(exc)
                        context.log.error(f"{failed}: {exc}")
                    todo.clear()
                    continue
                try:
                    sub = clients[pod.pod_id].submit(state.video(key).api_json)
                except PromptValidationError as exc:
                    state.failures[key] = str(exc)
                    state.served_by[key] = pod.pod_id
                    context.log.error(f"{key}: {exc}")
                    continue
                except ComfyUIError as exc:
                    # The pod's worker finds out what is wrong with it; the prompt waits.
                    todo.appendleft(key)
                    skip.add(pod.pod_id)
                    context.log.warning(f"pod {pod.pod_id}: could not queue {key}: {exc}")
                    continue
                state.submitted[key] = Submitted(
                    sub.prompt_id, int(sub.number), float(sub.submitted_at), pod.pod_id
                )
                state.served_by[key] = pod.pod_id
                context.log.info(f"[pod {pod.pod_id}] queued {key} as prompt {sub.prompt_id}")
    return state


@op(out=Out(BatchState))
def harvest_outputs(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
):
    """One worker thread per pod pulls prompts from the shared queue; each video is
    materialized the moment its object is in R2, and each pod terminated as soon as the queue
    is empty and its last video is in R2."""
    runpod, settings = pods_for(runpod, comfyui, settings)
    client = runpod.get_client()
    live = state.live_pods()
    done = set(state.submitted) | set(state.failures)
    fleet = Fleet(
        state=state,
        settings=settings,
        todo=deque(key for key in state.partition_keys if key not in done),
        live_workers=len(live),
        replacements_left=settings.max_replacement_pods,
        budget=run_budget(state),
    )
    in_flight = [k for k in state.submitted if k not in state.records and k not in state.failures]
    fleet.budget.already_in_flight(len(in_flight))
    leases = LeaseKeeper(r2, context.run_id, settings.pod_lease_s, [p.pod_id for p in live])
    slots = _slots(context, settings)
    launcher = _launcher(context, state, runpod, r2, settings, leases, fleet.budget)

    forwarder = PodLogForwarder(r2, context.log, state.log_cursors)

    def relaunch(dead: PodInfo) -> PodInfo | None:
        try:
            pod = launcher.ready(launcher.launch(dead.slot_key, attempt=1))
        except Exception as exc:
            fleet.say(dead.pod_id, f"replacement pod failed: {exc}", "error")
            return None
        state.pods[pod.pod_id] = pod
        fleet.budget.pod_started(pod.pod_id, pod.cost_per_hr, at=pod.launched_at)
        return pod

    workers = [
        PodWorker(
            fleet, pod, runpod=runpod, comfyui=comfyui, r2=r2, leases=leases, slots=slots,
            relaunch=relaunch,
        )
        for pod in live
    ]  # fmt: skip
    with (
        leases,
        fleet_teardown(context, client, state, settings, leases),
        remembered_interrupts() as stopped,
    ):
        try:
            for worker in workers:
                worker.start()
            while any(w.is_alive() for w in workers) or not fleet.events.empty():
                stopped()
                forwarder.poll(list(state.pods))
                try:
                    event = fleet.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                yield from _handle(context, state, r2, settings, event)
            forwarder.poll(list(state.pods), force=True)  # the pods' last lines
        except BaseException:
            fleet.stop.set()
            raise
        for key in list(fleet.todo):  # cannot happen unless every worker crashed
            state.failures.setdefault(key, "no pod was left to run it")
    yield Output(state)


def _handle(
    context: OpExecutionContext,
    state: BatchState,
    r2: R2Resource,
    settings: GenerationSettings,
    event: Any,
) -> Iterator[AssetMaterialization | AssetCheckEvaluation]:
    """Turn a worker's event into a log line, or a materialization and its check evaluations
    (main thread only)."""
    if event.kind == "log":
        getattr(context.log, event.level)(event.message)
    elif event.kind == "failed":
        state.failures[event.partition_key] = event.message
        context.log.error(f"partition {event.partition_key} failed: {event.message}")
    elif event.kind == "video":
        key, record = event.partition_key, event.record
        state.records[key] = record
        state.served_by[key] = event.pod_id
        pod = state.pods[event.pod_id]
        seconds = pod_seconds(state, pod)[key]
        context.log.info(
            f"[pod {pod.pod_id}] {key}: {record.r2_key} ({record.r2_source}, {record.size_bytes} B)"
        )
        yield AssetMaterialization(
            asset_key=GENERATED_VIDEO,
            partition=key,
            metadata=video_metadata(
                record=record,
                video=state.video(key),
                pod=pod,
                r2=r2,
                pod_seconds=seconds,
                cost_usd=pod.cost_per_hr * seconds / 3600.0,
                batch_size=len(state.videos),
            )
            | preempted_metadata(state, key),
        )
        # The checks are not steps of the run (the ops materialize with events), so the
        # Checks tab gets each video's three evaluations from here, right after it lands.
        # Best effort: the video is in, and R2 trouble while reading it back must not fail
        # the harvest of the others.
        try:
            checks = list(video_check_evaluations(context.instance, r2, [key]))
        except Exception as exc:
            context.log.warning(
                f"{key}: checks not recorded ({type(exc).__name__}: {exc}); run them from the "
                "asset's Checks tab"
            )
            checks = []
        yield from checks
    elif event.kind == "pod_end":
        pod = state.pods[event.pod_id]
        if pod.terminated_at is not None:
            billed = pod.terminated_at - pod.launched_at
            context.log.info(
                f"[pod {pod.pod_id}] done: billed {billed:.1f} s = "
                f"${pod.cost_per_hr * billed / 3600:.4f}"
                + ("" if pod.terminate_confirmed else " (terminate UNCONFIRMED)")
            )


@op(out=Out(is_required=False))
def terminate_pod(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
):
    """Confirm every pod of the run is gone (retrying unconfirmed terminates), free their pod
    slots and leases, record each partition's settled cost, and fail the run naming the
    partitions that failed."""
    runpod, settings = pods_for(runpod, comfyui, settings)
    client = runpod.get_client()
    leases = LeaseKeeper(r2, context.run_id, settings.pod_lease_s)
    slots = _slots(context, settings)
    pending = [pod for pod in state.pods.values() if not pod.terminate_confirmed]
    in_parallel(pending, lambda pod: terminate_confirmed(client, pod, settings.terminate_confirm_s))
    try:
        # Pods of the state were just handled above; this catches any other pod of the run.
        strays = sweep_run_pods(
            client, context.run_id, keep=state.pods, wait_s=30.0,
            confirm_s=settings.terminate_confirm_s,
        )  # fmt: skip
        if strays:
            context.log.warning(f"terminated pod(s) of this run still running: {strays}")
    except Exception as exc:
        context.log.error(f"could not list this run's pods to confirm none is left: {exc}")
    for pod in state.pods.values():
        if pod.kept_warm:  # its idle lease is what keeps it adoptable and ends it in time
            continue
        leases.release(pod.pod_id)
        if pod.terminate_confirmed:
            slots.free(pod.slot_key)
    now = time.time()
    costs = settled_costs(state, now)
    total = sum(
        p.cost_per_hr * ((p.terminated_at or now) - p.launched_at) / 3600
        for p in state.pods.values()
    )
    last_visible: dict[str, float] = {}
    for key, record in state.records.items():
        producer = state.served_by.get(key, "")
        last_visible[producer] = max(last_visible.get(producer, 0.0), record.visible_at)
    for key in state.partition_keys:
        pod_id = state.served_by.get(key)
        yield AssetObservation(
            asset_key=GENERATED_VIDEO,
            partition=key,
            metadata=settled_metadata(
                cost_usd=costs[key],
                pod=state.pods.get(pod_id) if pod_id else None,
                now=now,
                produced=key in state.records,
                pod_last_visible_at=last_visible.get(pod_id or ""),
            ),
        )
    context.log.info(
        f"{len(state.pods)} pod(s) billed ${total:.4f} in all for {len(state.videos)} video(s): "
        + ", ".join(
            f"{p.pod_id} {((p.terminated_at or now) - p.launched_at):.1f} s"
            for p in state.pods.values()
        )
    )
    unconfirmed = [p.pod_id for p in state.pods.values() if not p.terminate_confirmed]
    problems = [f"{key}: {why}" for key, why in state.failures.items()]
    if unconfirmed:
        problems.append(
            f"terminate of pod(s) {', '.join(unconfirmed)} not confirmed: they may still bill; "
            "the reaper keeps trying (or `rp-launch terminate <id>`)"
        )
    if problems:
        n_failed = len(state.failures)
        raise Failure(
            f"{n_failed} of {len(state.videos)} video(s) failed"
            + (f" ({', '.join(state.failures)})" if n_failed else "")
            + "; every other video is materialized. "
            + " | ".join(problems),
            metadata={key: MetadataValue.text(msg) for key, msg in state.failures.items()},
        )
