"""`rp-launch doctor`: check a setup before it spends anything, one line per check.

Every call is read-only at RunPod (no pod is created); R2 gets one small probe object under
the prefix, written, read back, listed and deleted. Exit status 1 when any check fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from rp_agent.keys import control_prefix
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.integrations.runpod.client import GpuType, RunPodClient
from rp_pipeline.integrations.runpod.errors import RunPodAuthError, RunPodError

# Catalog stock levels that can take a new pod now.
IN_STOCK = {"LOW", "MEDIUM", "HIGH"}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<16} {self.detail}"


@dataclass
class Setup:
    """What a run would use, as the settings give it."""

    gpu_types: list[str]
    cloud_type: str
    network_volume_ids: list[str] = field(default_factory=list)
    image: str | None = None
    template_id: str | None = None


def run_checks(
    client: RunPodClient,
    setup: Setup,
    r2: Callable[[], R2Resource],
    dagster_instance: Callable[[], Any] | None,
) -> list[Check]:
    checks: list[Check] = []
    key = _check("runpod key", lambda: _key(client))
    checks.append(key)
    if key.ok:
        volumes = list(_volumes(client, setup))
        checks += volumes
        datacenters = [c.detail.rsplit(" ", 1)[-1] for c in volumes if c.ok]
        checks.append(_check("gpu stock", lambda: _stock(client, setup, datacenters)))
        checks.append(_check("image", lambda: _image(client, setup)))
    checks.append(_check("r2", lambda: _r2(r2())))
    if dagster_instance is not None:
        checks.append(_check("dagster", lambda: _dagster(dagster_instance)))
    return checks


def _check(name: str, probe: Callable[[], str]) -> Check:
    """The probe's one-line detail when it passes; its exception's message when it fails."""
    try:
        return Check(name, True, probe())
    except Failed as exc:
        return Check(name, False, str(exc))
    except RunPodAuthError:
        return Check(name, False, "RunPod refused the key (RUNPOD_API_KEY): check it")
    except (RunPodError, BotoCoreError, ClientError, OSError) as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


class Failed(Exception):
    """A check's finding, in one line."""


def _key(client: RunPodClient) -> str:
    pods = client.list_pods()
    return f"accepted ({len(pods)} pod(s) on the account)"


def _volumes(client: RunPodClient, setup: Setup) -> Iterator[Check]:
    if not setup.network_volume_ids:
        yield Check("network volume", True, "none set: pods download models on each boot")
        return
    known = {v.get("id"): v for v in client.network_volumes()}
    for volume_id in setup.network_volume_ids:
        volume = known.get(volume_id)
        if volume is None:
            yield Check(
                "network volume",
                False,
                f"{volume_id} does not exist on this account (RUNPOD_NETWORK_VOLUME_ID)",
            )
            continue
        datacenter = volume.get("dataCenterId") or volume.get("dataCenter") or "?"
        yield Check("network volume", True, f"{volume_id} in datacenter {datacenter}")


def _stock(client: RunPodClient, setup: Setup, datacenters: list[str]) -> str:
    catalog = {gpu.id: gpu for gpu in client.gpu_types()}
    unknown = [g for g in setup.gpu_types if g not in catalog]
    if unknown:
        raise Failed(f"unknown GPU type(s) {', '.join(unknown)} (RP_GPU_TYPES)")
    offers = []
    for gpu_id in setup.gpu_types:
        gpu = catalog[gpu_id]
        where: list[str | None] = [*datacenters] or [None]
        for datacenter in where:
            level = _level(gpu, datacenter)
            if level in IN_STOCK:
                price = gpu.price_for(setup.cloud_type)
                place = f" in {datacenter}" if datacenter else ""
                offers.append(f"{gpu_id}{place} {level.lower()} stock ${price or 0:.2f}/h")
    if not offers:
        place = f" in {', '.join(datacenters)}" if datacenters else ""
        raise Failed(
            f"none of {', '.join(setup.gpu_types)} is in stock{place} now; a run would fail "
            "(add GPU types to RP_GPU_TYPES, or a volume in another datacenter)"
        )
    return "; ".join(offers)


def _level(gpu: GpuType, datacenter: str | None) -> str:
    if datacenter and gpu.datacenters:
        return gpu.datacenters.get(datacenter, "NONE").upper()
    return (gpu.availability or gpu.stock_status or "UNKNOWN").upper()


def _image(client: RunPodClient, setup: Setup) -> str:
    if setup.template_id:
        templates = {t.get("id"): t for t in client.list_templates()}
        template = templates.get(setup.template_id)
        if template is None:
            raise Failed(f"template {setup.template_id} does not exist (RUNPOD_TEMPLATE_ID)")
        image = setup.image or template.get("imageName") or "?"
        return f"template {setup.template_id} ({image})"
    if setup.image:
        return setup.image
    raise Failed("no image: set RP_IMAGE (the image your CI publishes) or RUNPOD_TEMPLATE_ID")


def _r2(r2: R2Resource) -> str:
    key = f"{control_prefix(r2.prefix)}doctor/probe-{uuid.uuid4().hex[:12]}"
    body = b"rp-launch doctor probe"
    try:
        r2.put_bytes(key, body, "text/plain")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise Failed(
            f"bucket {r2.bucket} refused a write ({code}): the R2 token needs Object Read & Write"
        ) from None
    try:
        if r2.get_bytes(key) != body:
            raise Failed(f"bucket {r2.bucket} gave back other bytes than were written")
        listed = [k for page in r2.iter_keys(key) for k in page.keys]
        if key not in listed:
            raise Failed(f"bucket {r2.bucket} does not list the probe object")
    finally:
        r2.client.delete_object(Bucket=r2.bucket, Key=key)
    return f"bucket {r2.bucket}: write, read, list and delete under {r2.prefix}/ work"


def _dagster(instance_factory: Callable[[], Any]) -> str:
    with instance_factory() as instance:
        instance.get_runs(limit=1)
        return f"instance reachable ({type(instance.run_storage).__name__})"


def verdict(checks: list[Check]) -> str:
    failed = [c.name for c in checks if not c.ok]
    if failed:
        return f"NOT READY: {len(failed)} check(s) failed ({', '.join(failed)}); nothing was spent"
    return "READY: every check passed; nothing was spent"
