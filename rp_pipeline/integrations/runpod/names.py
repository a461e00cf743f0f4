"""The run's slug in the names of its pods: `dagster-<slug>-[label-]<nonce>` (the RunPod client),
`external-<slug>` (an external ComfyUI's stand-in pod id). The sweep finds a run's pods by it, so
every place that names or looks for them computes it here."""

import re

RUN_SLUG_LENGTH = 8


def run_slug(run_id: str) -> str:
    """The first 8 lowercase letters and digits of a run id ("" when it has none): short enough
    for a pod name, the same for every pod of the run."""
    return re.sub(r"[^a-z0-9]", "", run_id.lower())[:RUN_SLUG_LENGTH]
