"""Langfuse as a Dagster resource; the work is done by ``genepool.langfuse_io.LangfuseConnection``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from genepool.langfuse_io import LangfuseConnection
from resources.settings_base import resource_base, settings_of

_LangfuseBase = resource_base("_LangfuseBase", LangfuseConnection)


class LangfuseResource(_LangfuseBase):  # type: ignore[misc,valid-type]
    """Settings of ``genepool.langfuse_io.LangfuseConnection`` (declared there once); keys are read from the
    named environment variables at call time (never stored in config)."""

    def connection(self) -> LangfuseConnection:
        return settings_of(self, LangfuseConnection)

    @property
    def enabled(self) -> bool:
        return self.connection().enabled

    def client(self) -> Any:
        return self.connection().client()

    def fetch_traces(self, agent_type: str, since: Any = None, limit: int = 1000, *, db: Any,
                     partition_key: str | None = None) -> pd.DataFrame:
        return self.connection().fetch_traces(agent_type, since, limit, db=db, partition_key=partition_key)

    def fetch_trace_rows(self, agent_type: str, since: Any = None, limit: int = 1000):
        return self.connection().fetch_trace_rows(agent_type, since, limit)

    def log_experiment(self, experiment_id: str, prompt_id: str, results: Sequence[Mapping[str, Any]],
                       **kwargs: Any) -> dict[str, Any]:
        return self.connection().log_experiment(experiment_id, prompt_id, results, **kwargs)

    def push_prompt(self, name: str, content: str | list[dict[str, str]], labels: Sequence[str] = ("production",),
                    config: Mapping[str, Any] | None = None, commit_message: str | None = None) -> dict[str, Any]:
        return self.connection().push_prompt(name, content, labels, config, commit_message)
