"""Names the pipeline gives what it makes, looked up outside their definitions: the asset key
of the videos (event queries, budgets, checks) and a run's slug (pod names, the external
ComfyUI's pod id).

Below every other module of the package: the money rules, the RunPod client and the tools use
them as much as the definitions do, and one spelling means a renamed asset cannot leave a query
reading an empty history, nor a sweep miss the pods a run named.
"""

import re

from dagster import AssetKey

GENERATED_VIDEO = AssetKey("generated_video")

RUN_SLUG_LENGTH = 8


def run_slug(run_id: str) -> str:
    """The first 8 lowercase letters and digits of a run id ("" for none): short enough for a
    pod name, and the same for every pod of the run, so a sweep finds them by name."""
    return re.sub(r"[^a-z0-9]", "", run_id.lower())[:RUN_SLUG_LENGTH]
