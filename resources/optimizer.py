"""The generation settings as a Dagster resource, derived from ``GenerationConfig``: a knob added there
appears here (and in ``GENEPOOL_OPTIMIZER``) at once."""

from __future__ import annotations

from genepool.settings import GenerationConfig
from resources.settings_base import resource_base, settings_of

_OptimizerBase = resource_base("_OptimizerBase", GenerationConfig)


class OptimizerResource(_OptimizerBase):  # type: ignore[misc,valid-type]
    """Budgets and sizes of a generation (see ``genepool.settings.GenerationConfig``)."""

    def config(self) -> GenerationConfig:
        return settings_of(self, GenerationConfig)
