"""An offline RunPod: the GraphQL API the `runpod` SDK and our client speak, with pods as processes.

One module per job: `catalog` (GPU types, prices, datacenters), `state` (the account: pods,
volumes, templates, stock, faults), `graphql_api` (`POST /graphql`), `server` (HTTP routing and
`RunPodEmulator`), `admin` (`EmulatorAdmin`, the admin API over HTTP), `cli` (run it alone:
`python -m rp_devstack.runpod_emulator --state-dir DIR`).

Wire behaviour copied from RunPod and the SDK (`runpod/api/graphql.py`):
- `POST {base}/graphql` with `{"query": ...}`; the key arrives as `Authorization: Bearer KEY`
  (or `?api_key=`); a missing or wrong key is HTTP 401, which the SDK turns into
  `AuthenticationError`.
- Errors are HTTP 200 with `errors[0].message` (the SDK raises `QueryError`), e.g. RunPod's
  capacity message `There are no longer any instances available ...`; an unknown pod is `pod: null`.

Pods: `desiredStatus` RUNNING from creation; `runtime` stays null through a boot delay and until
the pod's ComfyUI listens; then `runtime.ports` maps 8188 to the real local port (isIpPublic true).
podStop -> EXITED, podResume -> RUNNING (boot again), podTerminate -> gone (`pod: null`).

Admin API (no auth, loopback only) under `/_emulator/`, mirrored by methods on `RunPodEmulator`
and on `EmulatorAdmin` (an HTTP handle for other processes):
  GET  /_emulator/pods        every pod incl. terminated, with uptime and cost
  GET  /_emulator/billing     {"total_cost": .., "pods": [{id, name, cost_per_hr, seconds, cost}]}
  POST /_emulator/faults      {"count": N, "mode": "5xx"|"hang", "operation": opt, "hang_seconds": s}
  POST /_emulator/stock       {"gpu_type_id": .., "count": N, "datacenter": opt}
  POST /_emulator/pods/<id>/crash
  POST /_emulator/boot_delay  {"seconds": s}
  POST /_emulator/reset       terminate every pod, clear faults, restore stock
"""

from rp_devstack.runpod_emulator.admin import EmulatorAdmin
from rp_devstack.runpod_emulator.catalog import CAPACITY_MESSAGE, DATACENTERS, GPU_CATALOG, GpuOffer
from rp_devstack.runpod_emulator.cli import main
from rp_devstack.runpod_emulator.server import RunPodEmulator
from rp_devstack.runpod_emulator.state import DEFAULT_API_KEY

__all__ = [
    "CAPACITY_MESSAGE",
    "DATACENTERS",
    "DEFAULT_API_KEY",
    "GPU_CATALOG",
    "EmulatorAdmin",
    "GpuOffer",
    "RunPodEmulator",
    "main",
]
