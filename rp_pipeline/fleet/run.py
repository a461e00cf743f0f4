"""One op's hold on the run's pods: the clients, leases, slots, launcher and log forwarding,
built the same way in every op of the chain, and the guard that ends every pod of the run when
the op fails or is interrupted (so teardown never depends on a later op running)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rp_pipeline.fleet.external import PodProvider
from rp_pipeline.fleet.launcher import Launcher
from rp_pipeline.fleet.leases import LeaseKeeper
from rp_pipeline.fleet.podlogs import PodLogForwarder
from rp_pipeline.fleet.settings import GenerationSettings
from rp_pipeline.fleet.slots import PodSlots
from rp_pipeline.fleet.state import BatchState, PodInfo
from rp_pipeline.fleet.sweep import sweep_run_pods
from rp_pipeline.fleet.teardown import terminate_confirmed
from rp_pipeline.fleet.threads import in_parallel
from rp_pipeline.integrations.comfyui.resource import ComfyUIResource
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.workflows.loras import batch_loras, pod_env_value


def lora_env_of(state: BatchState) -> str:
    """RP_LORAS for the run's pods: every LoRA its videos ask for, "" when none does."""
    refs = batch_loras(video.request for video in state.videos)
    return pod_env_value(refs) if refs else ""


def pod_env(settings: GenerationSettings, r2: R2Resource, run_id: str) -> dict[str, str]:
    """What every pod of the run gets in its env (secrets only as RunPod secret references)."""
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


class RunPods:
    """The run's pods as one op sees them. `log` is the run's log (info/warning/error)."""

    def __init__(
        self,
        *,
        run_id: str,
        instance: Any,
        log: Any,
        state: BatchState,
        provider: PodProvider,
        r2: R2Resource,
        settings: GenerationSettings,
        comfyui: ComfyUIResource,
        hold_live: bool = True,
        priority: int = 0,
    ) -> None:
        self.run_id = run_id
        self.instance = instance
        self.log = log
        self.state = state
        self.provider = provider
        self.r2 = r2
        self.settings = settings
        self.comfyui = comfyui
        self.client = provider.get_client()
        held = [pod.pod_id for pod in state.live_pods()] if hold_live else []
        self.leases = LeaseKeeper(r2, run_id, settings.pod_lease_s, held)
        self._slots: PodSlots | None = None
        self.priority = priority

    @property
    def slots(self) -> PodSlots:
        if self._slots is None:
            self._slots = PodSlots(
                self.instance, self.run_id, self.settings.max_live_pods, self.priority
            )
        return self._slots

    def launcher(self, budget: Any = None) -> Launcher:
        """The run's pod launcher, the same in every op that starts or readies pods."""
        return Launcher(
            runpod=self.provider,
            settings=self.settings,
            run_id=self.run_id,
            leases=self.leases,
            base_env={**self.provider.env, **pod_env(self.settings, self.r2, self.run_id)},
            batch_size=len(self.state.videos),
            plan=self.state.plan,
            budget=budget,
            loras_env=lora_env_of(self.state),
        )

    def log_forwarder(self) -> PodLogForwarder:
        return PodLogForwarder(self.r2, self.log, self.state.log_cursors)

    def end(self, pod: PodInfo) -> None:
        """Terminate the pod for sure and let go of its lease; its slot is freed only once
        RunPod confirmed the terminate (an unconfirmed pod may still be running)."""
        terminate_confirmed(self.client, pod, self.settings.terminate_confirm_s)
        self.release(pod)

    def release(self, pod: PodInfo) -> None:
        self.leases.release(pod.pod_id)
        if pod.terminate_confirmed:
            self.slots.free(pod.slot_key)

    def sweep(self, wait_s: float = 60.0) -> list[str]:
        """Terminate every pod named for the run that the run does not know (e.g. one whose
        create answer was lost). Every pod the run knows is spared: one it kept warm is idle
        now, and may already be another run's adopted pod (its name still carries this run)."""
        return sweep_run_pods(
            self.client, self.run_id, keep=self.state.pods, wait_s=wait_s,
            confirm_s=self.settings.terminate_confirm_s,
        )  # fmt: skip

    @contextlib.contextmanager
    def held(self) -> Iterator[RunPods]:
        """Renew the leases of the run's live pods while the block runs; any exception leaving
        it (the run cancelled from the UI included: a BaseException) terminates every pod of
        the run before propagating."""
        with self.leases:
            try:
                yield self
            except BaseException:
                self._end_all()
                raise

    def _end_all(self) -> None:
        self.log.error("op failed or was interrupted; terminating every pod of the run")
        live = [pod for pod in self.state.pods.values() if not pod.terminate_confirmed]
        in_parallel(
            live,
            lambda pod: terminate_confirmed(self.client, pod, self.settings.terminate_confirm_s),
        )
        for pod in live:
            self.release(pod)
        try:
            self.sweep(wait_s=30.0)
        except Exception as exc:  # the failure sensor and reaper try again
            self.log.error(f"could not list this run's pods to sweep them: {exc}")
