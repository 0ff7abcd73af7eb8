"""The generation settings as a Dagster resource, derived from ``GenerationConfig``: a knob added there
appears here (and in ``GENEPOOL_OPTIMIZER``) at once."""

from __future__ import annotations

import dataclasses

import dagster as dg
from pydantic import create_model

from genepool.settings import GenerationConfig


def _fields() -> dict:
    out = {}
    for f in dataclasses.fields(GenerationConfig):
        out[f.name] = (f.type if not isinstance(f.type, str) else eval(f.type), f.default)
    return out


_OptimizerBase = create_model("_OptimizerBase", __base__=dg.ConfigurableResource, **_fields())


class OptimizerResource(_OptimizerBase):  # type: ignore[misc,valid-type]
    """Budgets and sizes of a generation (see ``genepool.settings.GenerationConfig``)."""

    def config(self) -> GenerationConfig:
        return GenerationConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GenerationConfig)})
