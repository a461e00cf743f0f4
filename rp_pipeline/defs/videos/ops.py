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

import queue
import time
from collections import deque
from collections.abc import Mapping

from dagster import (
    Failure,
    MetadataValue,
    OpExecutionContext,
    Out,
    Output,
    op,
)

from rp_pipeline.defs.videos.events import handle_event, settled_observations
from rp_pipeline.fleet.billing import run_budget
from rp_pipeline.fleet.boot import BootWatch
from rp_pipeline.fleet.capacity import CapacityTimeout, wait_for_capacity
from rp_pipeline.fleet.external import pods_for
from rp_pipeline.fleet.launcher import idle_room
from rp_pipeline.fleet.podlogs import FORWARD_EVERY_S
from rp_pipeline.fleet.prime import prime_pods
from rp_pipeline.fleet.run import RunPods, lora_env_of
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.sizing import (
    fleet_size,
    over_cap_after_launch,
    pods_within_cost_cap,
)
from rp_pipeline.fleet.slot_audit import free_slots_of_gone_pods
from rp_pipeline.fleet.slots import POD_POOL
from rp_pipeline.fleet.state import BatchState, PodInfo
from rp_pipeline.fleet.teardown import remembered_interrupts, terminate_confirmed
from rp_pipeline.fleet.threads import in_parallel
from rp_pipeline.fleet.work import SharedWork
from rp_pipeline.fleet.worker import PodWorker
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.errors import RunPodTransientError
from rp_pipeline.integrations.runpod.resource import RunPodResource
from rp_pipeline.money.gpu_choice import Workload
from rp_pipeline.money.plan import plan_run
from rp_pipeline.settings import SettingError, current
from rp_pipeline.workflows.loras import lora_ids

__all__ = ["POD_POOL"]


def run_pods(
    context: OpExecutionContext,
    state: BatchState,
    runpod: RunPodResource,
    r2: R2Resource,
    settings: GenerationSettings,
    comfyui: ComfyUIResource,
    hold_live: bool = True,
) -> RunPods:
    """The op's hold on the run's pods, built the same way in every op of the chain."""
    provider, settings = pods_for(runpod, comfyui, settings)
    return RunPods(
        run_id=context.run_id, instance=context.instance, log=context.log, state=state,
        provider=provider, r2=r2, settings=settings, comfyui=comfyui, hold_live=hold_live,
        priority=run_priority(context.run_tags),
    )  # fmt: skip


def run_priority(tags: Mapping[str, str]) -> int:
    """Dagster's `dagster/priority` run tag (higher first; Dagster itself refuses a non-integer)."""
    try:
        return int(tags.get("dagster/priority", 0))
    except ValueError:
        return 0


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
    pods = run_pods(context, state, runpod, r2, settings, comfyui)
    provider, settings, client = pods.provider, pods.settings, pods.client
    n = len(state.videos)
    idle = idle_room(client, r2, provider, loras=lora_ids(lora_env_of(state)))
    try:
        catalog = wait_for_capacity(
            client, provider.pod_spec(), current("capacity_wait_s"), context.log.info
        )
        by_cost, spend = pods_within_cost_cap(
            client, provider, catalog, settings.max_total_cost_per_hr, idle.cost_per_hr
        )
    except RunPodTransientError as exc:
        raise Failure(f"{exc}; no pod was launched") from None
    except (CapacityTimeout, SettingError) as exc:
        raise Failure(f"no pod was launched: {exc}") from None
    if by_cost < 1:
        raise Failure(
            f"running pods already cost ${spend:.2f}/h; one more would pass the "
            f"${settings.max_total_cost_per_hr:.2f}/h cap (RP_MAX_TOTAL_COST_PER_HR)"
        )
    want = fleet_size(n, settings, by_cost)
    state.plan = plan_run(
        context.instance, catalog, list(provider.gpu_types), provider.cloud_type,
        videos=n, pods=max(0, want - idle.fitting),
        fallback_price=float(provider.max_cost_per_hr or 0.0), workload=Workload.of(state.videos),
    )  # fmt: skip
    if state.plan.gpu_types:
        context.log.info(state.plan.gpu_reason)
    slots = pods.slots
    waited = {"at": 0.0}

    def on_wait() -> None:
        if time.monotonic() - waited["at"] >= 30:
            waited["at"] = time.monotonic()
            context.log.info(f"waiting for a pod slot (pool {POD_POOL}, limit {slots.limit})")

    claimed = slots.claim(
        want, settings.pod_slot_wait_s, on_wait,
        reconcile=lambda: free_slots_of_gone_pods(
            slots, context.instance, client, settings.pod_lease_s, context.log
        ),
    )  # fmt: skip
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
    launcher = pods.launcher(run_budget(state))
    errors: dict[str, str] = {}
    with pods.held():
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
            spend_left = over_cap_after_launch(pods)
            if spend_left is not None and spend_left > settings.max_total_cost_per_hr + 1e-9:
                raise Failure(
                    f"running pods cost ${spend_left:.2f}/h, over the "
                    f"${settings.max_total_cost_per_hr:.2f}/h cap (RP_MAX_TOTAL_COST_PER_HR)"
                )
        finally:
            # The op owns every pod named for its run from the moment it asked for one: a pod
            # whose create answer was lost is terminated here, never left to bill.
            strays = pods.sweep()
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
    pods = run_pods(context, state, runpod, r2, settings, comfyui)
    launcher = pods.launcher()
    forwarder = pods.log_forwarder()
    boot = BootWatch(r2, context.log)

    def while_booting() -> None:
        forwarder.poll(list(state.pods))
        boot.poll(list(state.pods.values()))

    with pods.held():
        booting = in_parallel(state.live_pods(), launcher.ready, while_booting, FORWARD_EVERY_S)
        forwarder.poll(list(state.pods), force=True)  # what the pods said while booting
        for pod, result in booting:
            if isinstance(result, PodInfo):
                boot_s = (pod.ready_at or time.time()) - pod.launched_at - pod.adopted_idle_s
                boot.record(pod)
                context.log.info(f"pod {pod.pod_id} ready after {boot_s:.1f} s")
                continue
            pod.failure = f"never ready: {result}"
            context.log.error(f"pod {pod.pod_id} {pod.failure}")
            pods.end(pod)
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
    pods = run_pods(context, state, runpod, r2, settings, comfyui)
    with pods.held():
        prime_pods(pods)
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
    pods = run_pods(context, state, runpod, r2, settings, comfyui)
    settings = pods.settings
    live = state.live_pods()
    done = set(state.submitted) | set(state.failures)
    work = SharedWork(
        state=state,
        settings=settings,
        todo=deque(key for key in state.partition_keys if key not in done),
        live_workers=len(live),
        replacements_left=settings.max_replacement_pods,
        budget=run_budget(state),
    )
    in_flight = [k for k in state.submitted if k not in state.records and k not in state.failures]
    work.budget.already_in_flight(len(in_flight))
    launcher = pods.launcher(work.budget)
    forwarder = pods.log_forwarder()

    def relaunch(dead: PodInfo) -> PodInfo | None:
        try:
            pod = launcher.ready(launcher.launch(dead.slot_key, attempt=1))
        except Exception as exc:
            work.say(dead.pod_id, f"replacement pod failed: {exc}", "error")
            return None
        state.pods[pod.pod_id] = pod
        work.budget.pod_started(pod.pod_id, pod.cost_per_hr, at=pod.launched_at)
        return pod

    workers = [
        PodWorker(
            work, pod, runpod=pods.provider, comfyui=comfyui, r2=r2, leases=pods.leases,
            slots=pods.slots, relaunch=relaunch,
        )
        for pod in live
    ]  # fmt: skip
    with pods.held(), remembered_interrupts() as stopped:
        try:
            for worker in workers:
                worker.start()
            while any(w.is_alive() for w in workers) or not work.events.empty():
                stopped()
                forwarder.poll(list(state.pods))
                try:
                    event = work.events.get(timeout=0.5)
                except queue.Empty:
                    continue
                yield from handle_event(context.log, context.instance, state, r2, event)
            forwarder.poll(list(state.pods), force=True)  # the pods' last lines
        except BaseException:
            work.stop.set()
            raise
        for key in list(work.todo):  # cannot happen unless every worker crashed
            state.failures.setdefault(key, "no pod was left to run it")
    yield Output(state)


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
    pods = run_pods(context, state, runpod, r2, settings, comfyui, hold_live=False)
    pending = [pod for pod in state.pods.values() if not pod.terminate_confirmed]
    in_parallel(
        pending,
        lambda pod: terminate_confirmed(pods.client, pod, pods.settings.terminate_confirm_s),
    )
    try:
        # Pods of the state were just handled above; this catches any other pod of the run.
        strays = pods.sweep(wait_s=30.0)
        if strays:
            context.log.warning(f"terminated pod(s) of this run still running: {strays}")
    except Exception as exc:
        context.log.error(f"could not list this run's pods to confirm none is left: {exc}")
    for pod in state.pods.values():
        if not pod.kept_warm:  # its idle lease is what keeps it adoptable and ends it in time
            pods.release(pod)
    now = time.time()
    total = sum(
        p.cost_per_hr * ((p.terminated_at or now) - p.launched_at) / 3600
        for p in state.pods.values()
    )
    yield from settled_observations(state, now)
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
            f"terminate of pod(s) {', '.join(unconfirmed)} not confirmed: they may bill until "
            "each ends itself once its lease lapses (RP_POD_LEASE_S); see `rp-launch list`, "
            "end one now with `rp-launch terminate <id>`"
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
