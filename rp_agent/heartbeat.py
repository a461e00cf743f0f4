"""The agent's heartbeat: a tiny object rewritten every `HEARTBEAT_S` seconds while the agent
runs, so the run can tell a dead agent from a slow upload without waiting out a receipt
deadline (minutes). The run judges it by the object's age on R2's own clock (its `Date` less
its `LastModified`), so neither the pod's clock nor the run's matters.

Best effort like the other writers under `_rp/`: a failed write is tried again at the next
beat and never stops the agent's uploads. One PUT every 2 s is about 1,800 writes an hour per
pod, a fraction of a cent at R2's prices.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING

from rp_agent import clock
from rp_agent.keys import heartbeat_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
# The run takes the agent for gone once its heartbeat is this old on R2's clock: three beats
# missed (R2's stamps are whole seconds, so a live agent's beat reads at most ~3 s old).
STALE_AFTER_S = 3 * HEARTBEAT_S


class Heartbeat:
    def __init__(
        self, client: S3Client, bucket: str, pod_id: str, prefix: str, interval: float = HEARTBEAT_S
    ) -> None:
        self.client, self.bucket, self.interval = client, bucket, interval
        self.key = heartbeat_key(pod_id, prefix)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        self.beat()
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self) -> bool:
        body = json.dumps({"interval_s": self.interval, "pod_clock": round(clock.wall(), 3)})
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body.encode(), ContentType="application/json"
            )
        except Exception as exc:  # never let the heartbeat stop the agent
            if not self._failing:  # once per outage, not every beat
                log.warning(
                    "heartbeat write failed (%s); trying again every beat", type(exc).__name__
                )
            self._failing = True
            return False
        if self._failing:
            log.info("heartbeat written again")
        self._failing = False
        return True
