#!/usr/bin/env python3
"""The node catalogue of the exact image: ComfyUI's `/object_info`, split per node package, and
compared with the snapshots committed under workflows/catalogue/ (the ones the pipeline checks
workflows against before it rents a pod), so the two can never drift apart unnoticed.

    node_catalogue.py dump  --comfyui-dir DIR --out object_info.json [--python PY]
        start ComfyUI CPU-only on a loopback port (empty input/output/temp dirs, no model
        folders of the volume), save its GET /object_info answer, stop it.
    node_catalogue.py check --dump object_info.json --catalogue-dir DIR --config custom_nodes.toml
        exit 1, one line per difference, when the image's nodes differ from the committed ones.
    node_catalogue.py write --dump object_info.json --catalogue-dir DIR --config custom_nodes.toml
        (re)write the committed snapshots from a dump: core.json and <package>.json.

A node belongs to a package by its `python_module`: `custom_nodes.<folder>` for a custom node
package installed in custom_nodes/<folder>, anything else is ComfyUI itself (core.json).
Model-file and input-image lists depend on the files present, not on the code: a combo whose
options are empty in the committed snapshot is compared by its presence only.
Standard library only: it runs with the image's ComfyUI Python at build time.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CORE = "core"
CUSTOM_PREFIX = "custom_nodes."


class CatalogueError(Exception):
    """Something the command cannot work with; the message says what and what to do."""


def package_of(info: dict[str, Any]) -> str:
    module = str(info.get("python_module") or "")
    if module.startswith(CUSTOM_PREFIX):
        return module[len(CUSTOM_PREFIX) :].split(".")[0]
    return CORE


def split(object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{package: {node class: info}}; core is ComfyUI's own nodes."""
    packages: dict[str, dict[str, Any]] = {}
    for name, info in object_info.items():
        packages.setdefault(package_of(info), {})[name] = info
    return packages


def listed_packages(config: Path) -> list[str]:
    """The package folder names custom_nodes.toml installs, in order."""
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{config}: cannot read it ({exc})") from None
    return [str(p["name"]) for p in data.get("package", [])]


def _is_empty_combo(spec: Any) -> bool:
    if not isinstance(spec, list) or not spec:
        return False
    if isinstance(spec[0], list):
        return not spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return not spec[1].get("options")
    return False


def _file_lists_blanked(committed: dict[str, Any], image: dict[str, Any]) -> dict[str, Any]:
    """`image`'s node info with the options of every combo that is empty in `committed` emptied."""
    image = json.loads(json.dumps(image))
    for section in ("required", "optional"):
        mine = committed.get("input", {}).get(section, {})
        theirs = image.get("input", {}).get(section, {})
        for name, spec in mine.items():
            if _is_empty_combo(spec) and name in theirs:
                other = theirs[name]
                if isinstance(other, list) and other and isinstance(other[0], list):
                    theirs[name] = [[], *other[1:]]
                elif isinstance(other, list) and len(other) > 1 and isinstance(other[1], dict):
                    options = {k: v for k, v in other[1].items() if k != "options"}
                    if "options" in spec[1]:
                        options["options"] = spec[1]["options"]
                    theirs[name] = [other[0], options, *other[2:]]
    return image


def _first_difference(committed: Any, image: Any, where: str) -> str | None:
    if isinstance(committed, dict) and isinstance(image, dict):
        for key in sorted(set(committed) | set(image), key=str):
            if key not in image:
                return f"{where}.{key}: in the committed snapshot, not in the image"
            if key not in committed:
                return f"{where}.{key}: in the image, not in the committed snapshot"
            found = _first_difference(committed[key], image[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(committed, list) and isinstance(image, list) and len(committed) == len(image):
        for index, (mine, theirs) in enumerate(zip(committed, image, strict=True)):
            found = _first_difference(mine, theirs, f"{where}.{index}")
            if found:
                return found
        return None
    if committed != image:
        return f"{where}: committed {json.dumps(committed)[:120]}, image {json.dumps(image)[:120]}"
    return None


def drift(
    object_info: dict[str, Any], committed: dict[str, dict[str, Any]], listed: list[str]
) -> list[str]:
    """One line per difference between the image's nodes and the committed snapshots
    ({package: nodes}; core plus each listed package)."""
    problems = []
    image = split(object_info)
    for package in [CORE, *listed]:
        if package not in committed:
            problems.append(f"{package}: no committed snapshot {package}.json")
            continue
        have = image.get(package, {})
        if package != CORE and not have:
            problems.append(f"{package}: listed in custom_nodes.toml but no node of it loaded")
            continue
        for node in sorted(set(committed[package]) | set(have)):
            if node not in have:
                problems.append(f"{package}: node {node} is in the snapshot, not in the image")
            elif node not in committed[package]:
                problems.append(f"{package}: node {node} is in the image, not in the snapshot")
            else:
                theirs = _file_lists_blanked(committed[package][node], have[node])
                found = _first_difference(committed[package][node], theirs, node)
                if found:
                    problems.append(f"{package}: {found}")
    return problems


def unlisted(object_info: dict[str, Any], listed: list[str]) -> list[str]:
    """Custom node packages in the image that custom_nodes.toml does not list (the base image's
    own): their nodes are not in any snapshot, so the pipeline refuses workflows using them."""
    return sorted(set(split(object_info)) - {CORE, *listed})


def read_committed(directory: Path, packages: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for package in [CORE, *packages]:
        path = directory / f"{package}.json"
        if path.exists():
            try:
                found[package] = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise CatalogueError(f"{path}: not JSON ({exc})") from None
    return found


# ---------------------------------------------------------------- dump


def find_comfyui(given: str | None) -> Path:
    for candidate in (given, "/ComfyUI", "/workspace/ComfyUI"):
        if candidate and (Path(candidate) / "main.py").is_file():
            return Path(candidate)
    raise CatalogueError("ComfyUI not found: pass --comfyui-dir (the folder holding main.py)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dump(comfyui_dir: Path, python: str, timeout_s: float) -> dict[str, Any]:
    """GET /object_info from a CPU-only ComfyUI started just for this, then stopped."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="node-catalogue-") as tmp:
        dirs = {name: Path(tmp) / name for name in ("input", "output", "temp", "user")}
        for path in dirs.values():
            path.mkdir()
        argv = [
            python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
            "--disable-auto-launch", "--input-directory", str(dirs["input"]),
            "--output-directory", str(dirs["output"]), "--temp-directory", str(dirs["temp"]),
            "--user-directory", str(dirs["user"]),
        ]  # fmt: skip
        log_path = Path(tmp) / "comfyui.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, cwd=comfyui_dir, stdout=log, stderr=subprocess.STDOUT)
            try:
                return _wait_for_object_info(proc, port, timeout_s, log_path)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_for_object_info(
    proc: subprocess.Popen[bytes], port: int, timeout_s: float, log_path: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise CatalogueError(f"ComfyUI exited with status {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/object_info", timeout=30) as r:
                data = json.loads(r.read())
            if isinstance(data, dict) and data:
                return data
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    raise CatalogueError(f"ComfyUI did not answer /object_info within {timeout_s:.0f} s")


def write(object_info: dict[str, Any], directory: Path, listed: list[str]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    packages = split(object_info)
    written = []
    for package in [CORE, *listed]:
        path = directory / f"{package}.json"
        nodes = packages.get(package, {})
        path.write_text(json.dumps(nodes, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
        written.append(path)
    return written


def _load_dump(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"{path}: not a saved /object_info answer ({exc})") from None
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: not a saved /object_info answer (an object of nodes)")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="node_catalogue.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="save the /object_info of a CPU-only ComfyUI")
    d.add_argument("--comfyui-dir")
    d.add_argument("--python", default=sys.executable)
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--timeout", type=float, default=600.0)
    for name in ("check", "write"):
        p = sub.add_parser(name)
        p.add_argument("--dump", required=True, type=Path)
        p.add_argument("--catalogue-dir", required=True, type=Path)
        p.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "dump":
            data = dump(find_comfyui(args.comfyui_dir), args.python, args.timeout)
            args.out.write_text(json.dumps(data, sort_keys=True))
            print(f"node catalogue: {len(data)} nodes from ComfyUI saved to {args.out}")
            return 0
        data = _load_dump(args.dump)
        listed = listed_packages(args.config)
        if args.command == "write":
            for path in write(data, args.catalogue_dir, listed):
                print(f"node catalogue: wrote {path}")
            return 0
        for package in unlisted(data, listed):
            print(f"node catalogue: {package} is installed but not in custom_nodes.toml: "
                  "workflows using its nodes are refused before any pod")  # fmt: skip
        problems = drift(data, read_committed(args.catalogue_dir, listed), listed)
    except CatalogueError as exc:
        print(f"node catalogue: {exc}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"node catalogue drift: {line}", file=sys.stderr)
    if problems:
        print(
            f"node catalogue: {len(problems)} difference(s) between this image and "
            f"{args.catalogue_dir}; if the image is right, regenerate the snapshots with "
            "scripts/regen-node-catalogue.sh IMAGE and commit them",
            file=sys.stderr,
        )
        return 1
    print(f"node catalogue: the image matches {args.catalogue_dir} ({len(data)} nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
