"""The code's shape, as a newcomer relies on it: no import circle (imports inside functions
count), each floor of rp_pipeline imports only the floors below it, the environment is read in
one module, and no module of the code location grows past about 400 lines."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rp_pipeline", "rp_agent", "rp_devstack")
# rp_pipeline's floors, lowest first: a module may import its own floor and the ones below.
FLOORS = (
    "setting_kinds",
    "settings",
    "asset_keys",
    "integrations",
    "media",
    "workflows",
    "video_requests",
    "money",
    "fleet",
    "defs",
    "definitions",
    "tools",
)
MAX_LINES = 420  # "about 400"


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its body."""
    mods = modules()
    edges: dict[str, set[str]] = collections.defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def floor(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "rp_pipeline" or len(parts) < 2 or parts[1] not in FLOORS:
        return None
    return FLOORS.index(parts[1])


def test_every_floor_imports_only_the_floors_below() -> None:
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if (a := floor(module)) is not None and (b := floor(target)) is not None and b > a
    ]
    assert upward == []


def test_every_package_of_the_code_location_has_a_floor() -> None:
    names = {
        path.relative_to(ROOT / "rp_pipeline").parts[0].removesuffix(".py")
        for path in (ROOT / "rp_pipeline").rglob("*.py")
    } - {"__init__"}
    assert names <= set(FLOORS)


def reads_environment(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb"}:
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and {a.name for a in node.names} & {"environ", "getenv"}
        ):
            return True
    return False


def test_the_environment_is_read_in_one_module() -> None:
    readers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "rp_pipeline").rglob("*.py")
        if reads_environment(path)
    )
    assert readers == ["rp_pipeline/settings.py"]


@pytest.mark.parametrize("package", ["rp_pipeline"])
def test_no_module_grows_past_about_400_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
