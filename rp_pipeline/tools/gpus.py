"""`rp-launch gpus`: the GPU catalog's prices and stock and, with `--workflow NAME`, what a video
of that workflow has cost on each type (the instance's measured cost table, DAGSTER_HOME)."""

from __future__ import annotations

import argparse
from typing import Any

from rp_pipeline.integrations.runpod.catalog import GpuType
from rp_pipeline.money.cost_table import CostRow, measured_rows
from rp_pipeline.settings import value_of


class NoInstanceError(Exception):
    """--workflow without a Dagster instance to read."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datacenter", help="stock in this datacenter (e.g. EU-RO-1)")
    parser.add_argument(
        "--workflow",
        help="also show each type's measured cost per video of this workflow (reads the "
        "Dagster instance of DAGSTER_HOME)",
    )


def measured(workflow: str) -> list[CostRow]:
    if not value_of("DAGSTER_HOME"):
        raise NoInstanceError(
            "--workflow reads the Dagster instance's videos: set DAGSTER_HOME to the instance's "
            "directory"
        )
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        rows = measured_rows(instance, by_size=False) + measured_rows(instance)
    return [row for row in rows if row.workflow == workflow]


def _catalog_line(g: GpuType) -> str:
    spot = f"  spot ${g.spot_price}" if g.spot_price is not None else ""
    where = ", ".join(f"{dc} {level}" for dc, level in sorted(g.datacenters.items()))
    return (
        f"{g.id:28} {g.memory_gb or '?':>3} GB  secure ${g.secure_price}  "
        f"community ${g.community_price}{spot}  "
        f"stock {g.availability or g.stock_status or 'unknown'}" + (f" ({where})" if where else "")
    )


def _measured_line(row: CostRow) -> str:
    size = "all sizes" if row.resolution == "all" else f"{row.resolution}, {row.frames} frames"
    gen = f"{row.median_generation_s:.1f}" if row.median_generation_s is not None else "?"
    return (
        f"    {size:24} {row.videos:>4} video(s)  ${row.usd_per_video:.4f}/video  "
        f"median {gen} s generation, {row.median_billed_s:.1f} s billed"
    )


def command(client: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    gpus: list[GpuType] = client.gpu_types(args.datacenter)
    rows = measured(args.workflow) if args.workflow else []
    result = []
    for g in gpus:
        mine = [r for r in rows if r.gpu_type == g.id]
        if not args.json:
            print(_catalog_line(g))
            for row in mine:
                print(_measured_line(row))
            if args.workflow and not mine:
                print(f"    no video of {args.workflow} measured")
        entry = vars(g) | ({"measured": [r.as_dict() for r in mine]} if args.workflow else {})
        result.append(entry)
    return result
