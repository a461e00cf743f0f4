"""`video_preview` (poster PNG + probed facts per video) and `video_catalog` (index JSON and an
HTML gallery of every video) in R2. Both also cover videos made outside Dagster."""

import html
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import av
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    Config,
    DagsterInstance,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from PIL import Image
from pydantic import Field

from rp_pipeline.defs.videos.assets import generated_video
from rp_pipeline.defs.videos.checks import latest_materialization
from rp_pipeline.fleet.harvest import POSTER_WIDTH
from rp_pipeline.integrations.r2.keys import (
    CATALOG_HTML_KEY,
    CATALOG_INDEX_KEY,
    PREVIEWS_PREFIX,
    control_prefix,
    pipeline_partition_key,
    preview_json_key,
    preview_png_key,
    preview_video_key,
)
from rp_pipeline.integrations.r2.resource import R2Resource
from rp_pipeline.media import is_video_key, png_bytes, poster_image, poster_markdown, probe
from rp_pipeline.video_requests.store import load_request

# Videos that landed in R2 without a Dagster run (ComfyUI used by hand on a pod): the
# r2_new_objects sensor records them here so lineage covers them too.
r2_external_outputs = AssetSpec(
    "r2_external_outputs",
    description="Objects that appeared in the R2 outputs prefix outside any Dagster run.",
    group_name="video",
    kinds={"s3"},
)


class PreviewConfig(Config):
    object_keys: list[str] = Field(
        default_factory=list,
        description="R2 keys of videos to preview; empty = every video without a preview yet",
    )


def videos_without_preview(r2: R2Resource) -> list[str]:
    """Catch-up mode: a full listing, acceptable for an explicit run (the sensor never does it)."""
    videos: list[str] = []
    control = control_prefix(r2.prefix)
    for page in r2.iter_keys(f"{r2.prefix}/"):
        videos += [key for key in page.keys if is_video_key(key) and not key.startswith(control)]
    done: set[str] = set()
    for page in r2.iter_keys(f"{PREVIEWS_PREFIX}/"):
        done |= {video for video in map(preview_video_key, page.keys) if video is not None}
    return [key for key in videos if key not in done]


FACT_NAMES = ("width", "height", "frames", "fps", "duration_s", "codec")


def harvested_facts(instance: DagsterInstance, video_key: str) -> dict[str, Any] | None:
    """The facts the harvest probed for this video (its generated_video materialization), or
    None for a video made outside Dagster or materialized before posters were stored."""
    partition = pipeline_partition_key(video_key)
    record = latest_materialization(instance, partition) if partition else None
    if record is None:
        return None
    md = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    if md.get("r2_key") != video_key or not all(name in md for name in FACT_NAMES):
        return None
    return {name: md[name] for name in FACT_NAMES}


def stored_poster(r2: R2Resource, video_key: str) -> Image.Image | None:
    if r2.head(preview_png_key(video_key)) is None:
        return None
    image: Image.Image = Image.open(io.BytesIO(r2.get_bytes(preview_png_key(video_key))))
    return image


def build_preview(
    r2: R2Resource, video_key: str, harvested: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """Store poster PNG + facts JSON beside the video; (facts doc, poster markdown).

    A video the harvest already probed (and whose poster it stored) is not downloaded again.
    """
    head = r2.head(video_key)
    if head is None:
        raise FileNotFoundError(f"{video_key} is not in R2")
    image = stored_poster(r2, video_key) if harvested else None
    if harvested and image is not None:
        facts = harvested
    else:
        with tempfile.TemporaryDirectory(prefix="rp-preview-") as tmp:
            local = r2.download(video_key, Path(tmp) / Path(video_key).name)
            facts = probe(local).as_dict()
            image = poster_image(local)
        r2.put_bytes(preview_png_key(video_key), png_bytes(image, POSTER_WIDTH), "image/png")
    partition = pipeline_partition_key(video_key)
    request = load_request(r2, partition) if partition else None
    doc = {
        "key": video_key,
        "size_bytes": head.size,
        "sha256": head.metadata.get("sha256"),
        "last_modified": head.last_modified,
        "facts": facts,
        "poster_key": preview_png_key(video_key),
        "origin": "dagster" if request else "external",
        "partition_key": partition if request else None,
        "request": request.to_dict() if request else None,
        "previewed_at": time.time(),
    }
    r2.put_bytes(
        preview_json_key(video_key), json.dumps(doc, sort_keys=True).encode(), "application/json"
    )
    return doc, poster_markdown(image, caption=Path(video_key).name)


@asset(deps=[generated_video], group_name="video", kinds={"s3", "png"})
def video_preview(
    context: AssetExecutionContext, config: PreviewConfig, r2: R2Resource
) -> MaterializeResult:
    """Poster frame and probed facts of each given video (or of every video still lacking one)."""
    keys = config.object_keys or videos_without_preview(r2)
    docs = []
    unreadable: dict[str, str] = {}
    poster_md = ""
    for key in keys:
        try:
            doc, poster_md = build_preview(r2, key, harvested_facts(context.instance, key))
        except (av.error.FFmpegError, ValueError) as exc:
            if config.object_keys:  # asked for by name: that video is the point of the run
                raise Failure(f"{key} is not a readable video ({exc}); no preview made") from None
            # Found by the scan: one broken object in the bucket must not block the others.
            unreadable[key] = str(exc)
            context.log.warning(f"{key} is not a readable video, skipped: {exc}")
            continue
        docs.append(doc)
        context.log.info(f"preview of {key}: {doc['facts']['width']}x{doc['facts']['height']}")
    metadata: dict[str, Any] = {
        "videos": MetadataValue.int(len(docs)),
        "object_keys": MetadataValue.json([d["key"] for d in docs]),
    }
    if unreadable:
        metadata["unreadable"] = MetadataValue.json(unreadable)
    if len(docs) == 1:
        facts = docs[0]["facts"]
        metadata |= {
            "poster": MetadataValue.md(poster_md),
            "r2_key": MetadataValue.path(docs[0]["key"]),
            "poster_key": MetadataValue.path(docs[0]["poster_key"]),
            "origin": docs[0]["origin"],
            **{name: facts[name] for name in ("width", "height", "frames", "fps", "duration_s")},
        }
    return MaterializeResult(metadata=metadata)


def render_gallery(entries: list[dict[str, Any]], r2: R2Resource) -> str:
    cards = []
    for e in entries:
        f = e["facts"]
        req = e.get("request") or {}
        video_url = r2.public_url(e["key"]) or r2.presign(e["key"])
        poster_url = r2.public_url(e["poster_key"]) or r2.presign(e["poster_key"])
        caption = html.escape(req.get("prompt") or e["key"])
        cards.append(
            f'<figure><video controls preload="none" poster="{html.escape(poster_url)}" '
            f'src="{html.escape(video_url)}" width="320"></video><figcaption>{caption}<br>'
            f"<small>{f['width']}x{f['height']} · {f['frames']} frames @ {f['fps']} fps · "
            f"{e['origin']} · <code>{html.escape(e['key'])}</code></small></figcaption></figure>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Video catalog</title>"
        "<style>body{font-family:sans-serif;display:flex;flex-wrap:wrap;gap:1em}"
        "figure{width:320px;margin:0}</style></head><body>" + "".join(cards) + "</body></html>"
    )


@asset(deps=[video_preview], group_name="video", kinds={"s3", "html"})
def video_catalog(context: AssetExecutionContext, r2: R2Resource) -> MaterializeResult:
    """`catalog/index.json` and `catalog/index.html`: every previewed video with its metadata."""
    entries = []
    for page in r2.iter_keys(f"{PREVIEWS_PREFIX}/"):
        for key in page.keys:
            if preview_video_key(key) is not None:
                entries.append(json.loads(r2.get_bytes(key)))
    entries.sort(key=lambda e: e["key"])
    index = {"generated_at": time.time(), "count": len(entries), "videos": entries}
    r2.put_bytes(CATALOG_INDEX_KEY, json.dumps(index, indent=1).encode(), "application/json")
    r2.put_bytes(CATALOG_HTML_KEY, render_gallery(entries, r2).encode(), "text/html")
    context.log.info(f"catalog of {len(entries)} video(s) written")
    return MaterializeResult(
        metadata={
            "videos": MetadataValue.int(len(entries)),
            "external_videos": MetadataValue.int(sum(e["origin"] == "external" for e in entries)),
            "index_key": MetadataValue.path(CATALOG_INDEX_KEY),
            # The public link where R2_PUBLIC_BASE_URL is set, else the command that prints a
            # short-lived one (a presigned link carries the access key id: never stored).
            "gallery_url": r2.link_metadata(CATALOG_HTML_KEY),
        }
    )
