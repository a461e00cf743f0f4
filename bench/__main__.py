"""Run every benchmark module in this package (`python -m bench`), or the named ones.

A benchmark is any `bench/<name>.py` exposing `main()`; results go to `bench/results/`.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).parent


def discover() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(HERE)])
        if not info.ispkg and not info.name.startswith("_")
    )


def run(names: list[str]) -> int:
    available = discover()
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; have {', '.join(available)}")
        return 2
    failures = 0
    for name in names or available:
        module = importlib.import_module(f"bench.{name}")
        entry = getattr(module, "main", None)
        if entry is None:
            continue
        print(f"== bench.{name}", flush=True)
        code = entry()
        failures += bool(code)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
