"""The genepool database as a Dagster resource."""

from __future__ import annotations

import os

import dagster as dg

from genepool.db import Database, migrate, resolve_urls
from genepool.registry import PromptRegistry

_DATABASES: dict[str, Database] = {}


def plain_url(value: str | None) -> str | None:
    """A configured URL as a plain string: Dagster resolves a ``dg.EnvVar`` when a run starts, but a resource
    object used outside a run still holds the EnvVar itself (read its variable then)."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


class PostgresResource(dg.ConfigurableResource):
    """GENEPOOL_DATABASE_URL if set, else the embedded server in the data folder."""

    database_url: str | None = None

    def database(self) -> Database:
        url = plain_url(self.database_url) or os.environ.get("GENEPOOL_DATABASE_URL") or resolve_urls().genepool
        if url not in _DATABASES:
            migrate(url)
            _DATABASES[url] = Database(url)
        return _DATABASES[url]

    def registry(self) -> PromptRegistry:
        return PromptRegistry(self.database())
