"""Resource config derived from a library settings dataclass: each field is declared once, in the library."""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
from pydantic import create_model


def resource_base(name: str, settings: type) -> type[dg.ConfigurableResource]:
    """A ``ConfigurableResource`` base class with the fields (types and defaults) of dataclass ``settings``."""
    hints = typing.get_type_hints(settings)
    fields = {f.name: (hints[f.name], f.default) for f in dataclasses.fields(settings)}
    return create_model(name, __base__=dg.ConfigurableResource, **fields)  # type: ignore[call-overload]


def settings_of(resource: dg.ConfigurableResource, settings: type):
    """The ``settings`` dataclass filled from the resource's config."""
    return settings(**{f.name: getattr(resource, f.name) for f in dataclasses.fields(settings)})
