"""A configurable resource rebuilt with some of its fields changed."""

from __future__ import annotations

from typing import Any, TypeVar

from dagster import ConfigurableResource

R = TypeVar("R", bound=ConfigurableResource)


def replace_fields(resource: R, **changes: Any) -> R:
    """A copy of `resource` with `changes` applied, built through its constructor. Pydantic's
    `model_copy(update=...)` is not enough: Dagster keeps the config the resource was built with
    and would set the copy up from the old values."""
    fields = {name: getattr(resource, name) for name in type(resource).model_fields}
    return type(resource)(**{**fields, **changes})
