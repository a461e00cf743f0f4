"""Reading a prompts file safely: a file anyone may edit must not be able to stall or exhaust
the process that reads it. A file has a size cap, and YAML aliases are limited by what they
expand to: nine nested aliases of nine items each turn a few hundred bytes into 387 million
values, which any later walk of the document (a hash, a repr in an error) would have to visit.
(Errors about a bad value quote it through `reprlib.repr`, which cuts long values short.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# A prompts file holds a few hundred requests at most: far below both limits.
MAX_FILE_BYTES = 1024 * 1024
MAX_VALUES = 100_000


class UnsafeYamlError(ValueError):
    """The file is not read: the message is one line saying why and what to do."""


def expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values the node stands for once every alias is expanded (memoized per node,
    so an alias bomb is measured without being expanded)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    sizes[id(node)] = total
    return total


def load_yaml_file(path: Path) -> Any:
    """The file's YAML document (safe types only); UnsafeYamlError when it is too large or its
    aliases expand past MAX_VALUES."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UnsafeYamlError(
            f"{size} bytes, over the {MAX_FILE_BYTES} byte limit of a prompts file; split it"
        )
    loader = yaml.SafeLoader(path.read_text(encoding="utf-8"))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values = expanded_size(node, {})
        if values > MAX_VALUES:
            raise UnsafeYamlError(
                f"its YAML aliases expand to {values} values, over the limit of {MAX_VALUES} "
                "(an alias bomb?); repeat values less, or put shared settings under 'defaults:'"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()
