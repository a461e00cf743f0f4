"""The node catalogue workflows are checked against: what a ComfyUI answers on `/object_info`.

Every `*.json` in the catalogue folder (RP_NODE_CATALOGUE_DIR, default `<workflows>/catalogue`,
else the project's `workflows/catalogue`)
is one saved `/object_info` answer, merged in file-name order: `core.json` is the answer of a
bare ComfyUI 0.3.64 (its 495 core nodes), and each custom node package the image installs adds
a snapshot of its own nodes beside it (`curl http://<comfyui>/object_info > <package>.json`).
A node class in none of them is a class the pod's ComfyUI does not have.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from rp_pipeline.settings import DEFAULT_WORKFLOWS_DIR, current


class CatalogueError(ValueError):
    """A catalogue folder or snapshot that cannot be used; one line naming the file."""


def catalogue_dir() -> Path:
    """RP_NODE_CATALOGUE_DIR, else the workflows folder's `catalogue/`, else the project's: the
    catalogue describes the image, so a folder of your own workflows needs none of its own."""
    directory: Path | None = current("node_catalogue_dir")
    if directory is not None:
        return directory
    workflows: Path = current("workflows_dir")
    if (workflows / "catalogue").is_dir():
        return workflows / "catalogue"
    return DEFAULT_WORKFLOWS_DIR / "catalogue"


def object_info() -> dict[str, Any]:
    """The merged catalogue of the folder as it is now (re-read when a file changes)."""
    directory = catalogue_dir()
    paths = sorted(directory.glob("*.json")) if directory.is_dir() else []
    if not paths:
        raise CatalogueError(
            f"node catalogue {directory}: no *.json snapshot there (save a ComfyUI's "
            "GET /object_info answer as core.json, or set RP_NODE_CATALOGUE_DIR)"
        )
    return _merged(tuple((p, p.stat().st_mtime_ns, p.stat().st_size) for p in paths))


@cache
def _merged(files: tuple[tuple[Path, int, int], ...]) -> dict[str, Any]:
    catalogue: dict[str, Any] = {}
    for path, _, _ in files:
        catalogue.update(_read(path))
    return catalogue


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"node catalogue {path}: cannot read it ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"node catalogue {path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogueError(f"node catalogue {path}: expected an /object_info answer")
    for name, info in data.items():
        if not isinstance(info, dict) or not isinstance(info.get("input"), dict):
            raise CatalogueError(
                f"node catalogue {path}: node {name!r} has no 'input' table; save the whole "
                "GET /object_info answer of a running ComfyUI"
            )
    return data


def input_spec(info: dict[str, Any], name: str) -> tuple[Any, str, dict[str, Any]] | None:
    """(type, "required" | "optional", options) of one input of a node class, or None."""
    for category in ("required", "optional"):
        spec = (info.get("input") or {}).get(category, {}).get(name)
        if spec is not None:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], category, options
    return None


def combo_options(input_type: Any, options: dict[str, Any]) -> list[Any] | None:
    """A combo input's choices in either spelling (`[[a, b]]` or `["COMBO", {options}]`)."""
    if isinstance(input_type, list):
        return list(input_type)
    if input_type == "COMBO":
        return list(options.get("options", []))
    return None


def input_names(info: dict[str, Any], category: str) -> list[str]:
    """A class's inputs of one category in the node's own order."""
    order = (info.get("input_order") or {}).get(category)
    return list(order) if order else list((info.get("input") or {}).get(category, {}))


def value_kind(input_type: Any) -> str | None:
    """The parameter type an input takes: int, float, text, bool, choice (None: a link)."""
    if combo_options(input_type, {}) is not None or input_type == "COMBO":
        return "choice"
    return {"INT": "int", "FLOAT": "float", "STRING": "text", "BOOLEAN": "bool"}.get(input_type)
