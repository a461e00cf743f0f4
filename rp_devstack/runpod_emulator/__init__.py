"""An offline RunPod: REST API v2 and GraphQL over one account state, with pods as processes.

One module per job: `catalog` (GPU types, prices, speeds, datacenters), `market` (what is on
sale now: prices, speeds, free GPUs, stock changes to come), `state` (the
account: pods, volumes, templates, stock, faults, request counts), `errors` (`EmulatorError`,
a request RunPod refuses), `contract` (RunPod's REST v2
OpenAPI document, `openapi.json`, and validation against it), `rest_v2` (`/v2/...`),
`graphql_api` (`POST /graphql`), `server` (HTTP routing and `RunPodEmulator`), `admin`
(`EmulatorAdmin`, the admin API over HTTP), `preemption` (spot
preemption of interruptible pods), `cli` (run it alone:
`python -m rp_devstack.runpod_emulator --state-dir DIR`).

REST v2 (see `rest_v2`): every request and answer is validated against RunPod's OpenAPI
document; refused bodies are 422 `application/problem+json` naming the field; pods go
PROVISIONING -> STARTING -> RUNNING; `/v2/pods/{id}/logs` is an SSE stream; the catalog reports
availability per datacenter; every answer carries RateLimit headers.

GraphQL (wire behaviour copied from RunPod and the `runpod` SDK, `runpod/api/graphql.py`):
- `POST {base}/graphql` with `{"query": ...}`; the key arrives as `Authorization: Bearer KEY`
  (or `?api_key=`); a missing or wrong key is HTTP 401, which the SDK turns into
  `AuthenticationError`.
- Errors are HTTP 200 with `errors[0].message` (the SDK raises `QueryError`), e.g. RunPod's
  capacity message `There are no longer any instances available ...`; an unknown pod is `pod: null`.
- Pods: `desiredStatus` RUNNING from creation; `runtime` stays null through a boot delay and
  until the pod's ComfyUI listens; then `runtime.ports` maps 8188 to the real local port.
  podStop -> EXITED, podResume -> RUNNING (boot again), podTerminate -> gone (`pod: null`).

Admin API (no auth, loopback only) under `/_emulator/`, mirrored by methods on `RunPodEmulator`
and on `EmulatorAdmin` (an HTTP handle for other processes):
  GET  /_emulator/pods        every pod incl. terminated, with uptime and cost
  GET  /_emulator/billing     {"total_cost": .., "pods": [{id, name, cost_per_hr, seconds, cost}]}
  GET  /_emulator/requests    requests served per route: {"POST /v2/pods": 1, "POST /graphql": 3}
  POST /_emulator/requests/reset
  POST /_emulator/api_key     {"revoked": true|false}: the account's key answers 401 (pod keys work)
  GET  /_emulator/contract_violations   answers that broke the REST v2 document (should be [])
  POST /_emulator/faults      {"count": N, "mode": M, "operation": opt, "hang_seconds": s,
                               "retry_after": s, "seconds": opt}; the next N calls of
                               `operation` (any if omitted), on either API, fail by mode (with
                               "seconds", only calls within that many seconds: an outage):
                                 "5xx"   502 with an HTML body, before doing anything
                                 "hang"  do it, answer only after hang_seconds (lost response)
                                 "lose"  do it, then close the connection with no answer
                                 "429"   refuse with Retry-After: retry_after, before doing anything
                               operation names (shared by both APIs): create_pod, list_pods,
                               get_pod, terminate_pod, stop_pod, start_pod, gpu_types, pod_logs,
                               save_template, list_templates, network_volumes; GraphQL root
                               field names (podFindAndDeployOnDemand, myself, pod, ...) and REST
                               operationIds (createPod, ...) work as aliases.
  POST /_emulator/stock       {"gpu_type_id": .., "count": N, "datacenter": opt, "after_s": opt,
                               "seconds": opt}: N GPUs free (per datacenter), now or after_s
                               from now; with seconds, only that long, then the count from
                               before returns (count 0 + seconds: out of stock for a while)
  GET  /_emulator/gpu_types   per type: prices, step_seconds, free GPUs, scheduled changes
  POST /_emulator/gpu_types   {"gpu_type_id": .., "secure_price": opt, "step_seconds": opt}
                               a new list price (community and spot follow) or stand-in speed;
                               pods already rented keep theirs
  POST /_emulator/pods/<id>/crash   the container dies: EXITED
  POST /_emulator/pods/<id>/error   {"reason": ..}: unrecoverable, REST v2 status ERROR
  POST /_emulator/pods/<id>/preempt   spot preemption (interruptible pods only: else 400)
  POST /_emulator/preemption  {"rate_per_hour": r, "seed": opt} random preemption (0: off)
  POST /_emulator/boot_delay  {"seconds": s}
  POST /_emulator/reset       terminate every pod, clear faults and counts, restore stock,
                               prices and speeds

GPU speed: each GPU type has a `step_seconds` (see `catalog`); a pod's ComfyUI stand-in sleeps
that long per sampler step unless the pod's env sets COMFY_STANDIN_STEP_SECONDS itself.
"""

from rp_devstack.runpod_emulator.admin import EmulatorAdmin
from rp_devstack.runpod_emulator.catalog import CAPACITY_MESSAGE, DATACENTERS, GPU_CATALOG, GpuOffer
from rp_devstack.runpod_emulator.cli import main
from rp_devstack.runpod_emulator.server import RunPodEmulator
from rp_devstack.runpod_emulator.state import DEFAULT_API_KEY, FAULT_MODES, OPERATIONS

__all__ = [
    "CAPACITY_MESSAGE",
    "DATACENTERS",
    "DEFAULT_API_KEY",
    "FAULT_MODES",
    "GPU_CATALOG",
    "OPERATIONS",
    "EmulatorAdmin",
    "GpuOffer",
    "RunPodEmulator",
    "main",
]
