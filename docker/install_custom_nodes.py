#!/usr/bin/env python3
"""Install the custom node packages docker/custom_nodes.toml lists, in its order, each at its
pinned commit, into ComfyUI's custom_nodes/ (run by the image build; standard library + git).

    install_custom_nodes.py --config custom_nodes.toml --comfyui-dir /ComfyUI [--python PY]

Per package: clone (fetch of just the pinned commit when the server allows it, else the whole
history), check out the commit detached, check HEAD is exactly it, then `PY -m pip install`
its requirements file (unless `requirements = ""`) and its `pip` extras. A folder already at
the pinned commit is kept (a rebuild's layer cache); at another commit it is checked out again.
Exit 0 all installed, 1 one failed (named, with git's or pip's last lines), 2 a bad config.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

SHA_RE = re.compile(r"^[0-9a-f]{40}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
KEYS = {"name", "repo", "commit", "requirements", "pip"}


class InstallError(Exception):
    """One line (plus the tool's last lines) saying which package failed and why."""


@dataclass(frozen=True)
class Package:
    name: str  # the folder under custom_nodes/ (ComfyUI's python_module: custom_nodes.<name>)
    repo: str
    commit: str
    requirements: str | None = "requirements.txt"
    pip: tuple[str, ...] = field(default_factory=tuple)


def load_config(path: Path) -> list[Package]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InstallError(f"{path}: cannot read it ({exc})") from None
    packages, seen = [], set()
    for index, raw in enumerate(data.get("package", [])):
        where = f"{path}: package {index + 1}"
        unknown = sorted(set(raw) - KEYS)
        if unknown:
            raise InstallError(f"{where}: unknown key(s) {', '.join(unknown)}")
        name, repo, commit = raw.get("name", ""), raw.get("repo", ""), raw.get("commit", "")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InstallError(f"{where}: 'name' must be the folder name, got {name!r}")
        if name in seen:
            raise InstallError(f"{where}: {name} is listed twice")
        if not isinstance(repo, str) or not repo:
            raise InstallError(f"{where} ({name}): 'repo' (the git URL) is missing")
        if not isinstance(commit, str) or not SHA_RE.match(commit):
            raise InstallError(f"{where} ({name}): 'commit' must be a full 40-hex commit sha")
        requirements = raw.get("requirements", "requirements.txt")
        pip = raw.get("pip", [])
        if not isinstance(requirements, str):
            raise InstallError(f"{where} ({name}): 'requirements' must be a path or \"\"")
        if not isinstance(pip, list) or not all(isinstance(p, str) for p in pip):
            raise InstallError(f"{where} ({name}): 'pip' must be a list of requirement strings")
        seen.add(name)
        packages.append(Package(name, repo, commit, requirements or None, tuple(pip)))
    return packages


def run(argv: list[str], cwd: Path | None, what: str) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise InstallError(f"{what}: `{shlex.join(argv[:4])} ...` failed\n{tail}")
    return result.stdout.strip()


def head(folder: Path) -> str | None:
    if not (folder / ".git").exists():
        return None
    result = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def checkout(package: Package, folder: Path) -> bool:
    """The package's folder at its pinned commit; False when it already was."""
    if head(folder) == package.commit:
        return False
    what = f"{package.name} @ {package.commit[:12]}"
    if not (folder / ".git").exists():
        folder.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "--quiet"], folder, what)
        run(["git", "remote", "add", "origin", package.repo], folder, what)
    fetched = subprocess.run(
        ["git", "fetch", "--quiet", "--depth", "1", "origin", package.commit],
        cwd=folder, capture_output=True, text=True,
    )  # fmt: skip
    if fetched.returncode != 0:  # a server that serves only advertised refs: fetch them all
        run(["git", "fetch", "--quiet", "origin"], folder, what)
    run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", "--force",
         package.commit], folder, what)  # fmt: skip
    if head(folder) != package.commit:
        raise InstallError(f"{what}: HEAD is {head(folder)} after checkout, not the pinned commit")
    return True


def pip_install(package: Package, folder: Path, pip: list[str]) -> None:
    what = f"{package.name}: pip"
    if package.requirements:
        requirements = folder / package.requirements
        if requirements.is_file():
            run([*pip, "install", "--no-cache-dir", "-r", str(requirements)], folder, what)
        elif package.requirements != "requirements.txt":  # named explicitly: must be there
            raise InstallError(f"{package.name}: no {package.requirements} at the pinned commit")
    if package.pip:
        run([*pip, "install", "--no-cache-dir", *package.pip], folder, what)


def install(packages: list[Package], custom_nodes: Path, pip: list[str]) -> None:
    for package in packages:
        folder = custom_nodes / package.name
        changed = checkout(package, folder)
        pip_install(package, folder, pip)
        state = "installed" if changed else "already at"
        print(f"custom nodes: {state} {package.name} @ {package.commit[:12]}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="install_custom_nodes.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--comfyui-dir", required=True, type=Path)
    parser.add_argument(
        "--pip", default=f"{sys.executable} -m pip",
        help="the pip command of ComfyUI's Python (default: this Python's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        packages = load_config(args.config)
    except InstallError as exc:
        print(f"custom nodes: {exc}", file=sys.stderr)
        return 2
    if not (args.comfyui_dir / "main.py").is_file():
        print(f"custom nodes: {args.comfyui_dir} holds no ComfyUI (main.py)", file=sys.stderr)
        return 2
    try:
        install(packages, args.comfyui_dir / "custom_nodes", shlex.split(args.pip))
    except InstallError as exc:
        print(f"custom nodes: {exc}", file=sys.stderr)
        return 1
    print(f"custom nodes: {len(packages)} package(s) at their pinned commits", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
