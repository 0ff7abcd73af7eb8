"""dbt as a Dagster resource pointed at the genepool database for each invocation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster_dbt import DbtCliInvocation, DbtCliResource

from genepool.dbt_project import DBT_PROJECT_DIR, dbt_env, dbt_executable, patched_environ


class GenepoolDbtCliResource(DbtCliResource):
    """DbtCliResource that points dbt at the genepool database for each invocation.

    ``database_url`` None = the project's database (GENEPOOL_DATABASE_URL or the embedded server),
    resolved at run time. Prefer None or ``dg.EnvVar(...)`` over a literal URL with a password.
    """

    database_url: str | None = None

    def resolved_database_url(self) -> str:
        from resources.postgres import plain_url

        if plain_url(self.database_url):
            return plain_url(self.database_url)
        from genepool.db import Database

        return Database.from_env().url

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:  # type: ignore[override]
        # The dbt subprocess inherits os.environ at Popen time, inside super().cli().
        with patched_environ(dbt_env(self.resolved_database_url())):
            return super().cli(args, **kwargs)


def dbt_resource(database_url: str | None = None) -> GenepoolDbtCliResource:
    """The resource the metrics assets need under the key ``"dbt"``."""
    return GenepoolDbtCliResource(
        project_dir=str(DBT_PROJECT_DIR),
        database_url=database_url,
        dbt_executable=dbt_executable(),
    )


