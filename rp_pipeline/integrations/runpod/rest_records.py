"""Our records (GraphQL field names) to and from RunPod's REST API v2 bodies.

Requests carry only fields RunPod's v2 OpenAPI document defines (its request schemas refuse any
other with a 422); answers are mapped to the record shape `RunPodBackend` promises, so the pod
logic above is the same for both APIs.
"""

from __future__ import annotations

from typing import Any

# v2 status -> the GraphQL-era desiredStatus the records also carry.
DESIRED = {
    "PROVISIONING": "RUNNING",
    "STARTING": "RUNNING",
    "RUNNING": "RUNNING",
    "ERROR": "EXITED",
}


def create_body(request: dict[str, Any]) -> dict[str, Any]:
    """Our create request (GraphQL input field names) as a v2 `CreatePodRequest`.

    Fields v2 does not define are dropped: minVcpuCount / minMemoryInGb (v2 picks the machine
    by GPU type), supportPublicIp, volumeInGb under 10 GB (v2's persistent-mount floor).
    cloudType ALL becomes v2's default, SECURE: v2 has no "either cloud" create.
    """
    body: dict[str, Any] = {
        "name": request["name"],
        "gpu": {"id": request["gpuTypeId"], "count": int(request.get("gpuCount") or 1)},
    }
    if request.get("imageName"):
        body["image"] = request["imageName"]
    if request.get("cloudType") in ("SECURE", "COMMUNITY"):
        body["cloud"] = request["cloudType"]
    if request.get("containerDiskInGb"):
        body["disk"] = int(request["containerDiskInGb"])
    if request.get("dockerArgs"):
        body["args"] = request["dockerArgs"]
    if request.get("ports"):
        body["ports"] = [p.strip() for p in str(request["ports"]).split(",") if p.strip()]
    if request.get("env"):
        body["env"] = {e["key"]: str(e.get("value") or "") for e in request["env"]}
    path = request.get("volumeMountPath") or "/workspace"
    if request.get("networkVolumeId"):
        body["mounts"] = {"network": [{"volumeId": request["networkVolumeId"], "path": path}]}
    elif int(request.get("volumeInGb") or 0) >= 10:
        body["mounts"] = {"persistent": {"size": int(request["volumeInGb"]), "path": path}}
    datacenters = request.get("dataCenterIds") or (
        [request["dataCenterId"]] if request.get("dataCenterId") else []
    )
    if datacenters:
        body["dataCenterIds"] = list(datacenters)
    if request.get("templateId"):
        body["templateId"] = request["templateId"]
    if request.get("startSsh"):
        body["startSsh"] = True
    return body


def template_body(template: dict[str, Any]) -> dict[str, Any]:
    """A saveTemplate input (GraphQL field names) as a v2 Create/UpdateTemplateRequest.

    `readme` has no v2 field and is dropped; an empty registry auth id means none."""
    body: dict[str, Any] = {
        "name": template["name"],
        "image": template["imageName"],
        "args": template.get("dockerArgs") or "",
        "ports": [p.strip() for p in str(template.get("ports") or "").split(",") if p.strip()],
        "env": {e["key"]: str(e.get("value") or "") for e in template.get("env") or []},
        "serverless": bool(template.get("isServerless")),
        "public": bool(template.get("isPublic")),
        "startSsh": bool(template.get("startSsh", True)),
        "startJupyter": bool(template.get("startJupyter", False)),
    }
    if template.get("containerDiskInGb"):
        body["disk"] = int(template["containerDiskInGb"])
    if int(template.get("volumeInGb") or 0) >= 10:
        body["mounts"] = {
            "persistent": {
                "size": int(template["volumeInGb"]),
                "path": template.get("volumeMountPath") or "/workspace",
            }
        }
    if template.get("containerRegistryAuthId"):
        body["registry"] = template["containerRegistryAuthId"]
    return body


def pod_record(pod: dict[str, Any]) -> dict[str, Any]:
    status = str(pod.get("status") or "UNKNOWN")
    gpu = pod.get("gpu") or {}
    runtime = pod.get("runtime") or None
    ports = []
    for mapping in (runtime or {}).get("ports") or []:
        ports.append(
            {
                "ip": mapping.get("ip"),
                "isIpPublic": bool(mapping.get("ip") and mapping.get("public")),
                "privatePort": mapping.get("private"),
                "publicPort": mapping.get("public"),
                "type": mapping.get("type"),
            }
        )
    return {
        "id": pod["id"],
        "name": pod.get("name") or "",
        "imageName": pod.get("image"),
        "status": status,
        "desiredStatus": DESIRED.get(status, status),
        "env": dict(pod.get("env") or {}),
        "costPerHr": pod.get("cost"),
        "gpuCount": gpu.get("count"),
        "ports": ",".join(pod.get("ports") or []),
        "dataCenterId": pod.get("dataCenterId"),
        "machine": {
            "gpuDisplayName": gpu.get("id"),
            "gpuTypeId": gpu.get("id"),
            "dataCenterId": pod.get("dataCenterId"),
        },
        "runtime": {"ports": ports} if runtime is not None else None,
    }


def gpu_record(gpu: dict[str, Any], datacenter: str | None) -> dict[str, Any]:
    price = gpu.get("price") or {}
    datacenters = [
        {"id": d["id"], "availability": d["availability"]} for d in gpu.get("dataCenters") or []
    ]
    availability = gpu.get("availability")
    if datacenter is not None and availability is not None:
        availability = next(
            (d["availability"] for d in datacenters if d["id"] == datacenter), "NONE"
        )
    return {
        "id": gpu["id"],
        "displayName": gpu.get("name") or gpu["id"],
        "memoryInGb": gpu.get("memory"),
        "securePrice": price.get("secure"),
        "communityPrice": price.get("community"),
        "secureSpotPrice": None,  # v2 quotes no spot price
        "availability": availability,
        "dataCenters": datacenters,
    }


def template_record(template: dict[str, Any]) -> dict[str, Any]:
    persistent = (template.get("mounts") or {}).get("persistent") or {}
    return {
        "id": template["id"],
        "name": template["name"],
        "imageName": template.get("image"),
        "dockerArgs": template.get("args") or "",
        "containerDiskInGb": template.get("disk"),
        "volumeInGb": persistent.get("size", 0),
        "volumeMountPath": persistent.get("path"),
        "ports": ",".join(template.get("ports") or []),
        "env": [{"key": k, "value": v} for k, v in (template.get("env") or {}).items()],
        "isServerless": template.get("serverless"),
    }
