"""The asset keys code outside the asset definitions looks up (event queries, budgets, checks).

One spelling, so a renamed asset cannot leave a query reading an empty history. Below every
other module of the package: the money rules and the tools use them as much as the definitions.
"""

from dagster import AssetKey

GENERATED_VIDEO = AssetKey("generated_video")
