"""What every command-line tool of the pipeline shows about itself: each option's default in
--help, and --version."""

from __future__ import annotations

import argparse
from typing import Any


class ShowDefaults(argparse.HelpFormatter):
    """--help shows each option's default, unless its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default: {action.default})"


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", ShowDefaults)
        super().__init__(*args, **kwargs)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runpod-dagster")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"
