"""The dbt metrics models as Dagster assets (group "metrics"), their dbt tests as asset checks.

dbt sources are mapped onto the Python assets that write the tables (see ``SOURCE_ASSET_KEYS``,
which agrees with ``meta.dagster.asset_key`` in dbt_metrics/models/sources.yml), so the models
hang under them in the asset graph. The dbt assets are not partitioned: they read all partitions.

dbt *model* tests are asset checks on the models. dbt *source* tests are not asset checks: as checks they
would hang on the Python generation assets, and a UI "Materialize" of those assets (Dagster's
``__ASSET_JOB``, which selects every check of the selected assets) would pull the dbt op in to run them,
possibly before the partition is built. They run with every ``dbt build`` of the metrics (the metrics job,
the refresh after a generation) and are recorded as observations of the Python asset they test.

The dbt manifest is never built on import: ``make manifest``, the CLI and the tests prepare it.
"""


import logging
from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from genepool.dbt_project import DBT_PROJECT_DIR

METRICS_GROUP = "metrics"
DBT_RESOURCE_KEY = "dbt"

# dbt source table (in source "genepool") -> key of the Dagster asset that writes it.
SOURCE_ASSET_KEYS: dict[str, list[str]] = {
    "traces": ["traces"],
    "experiment_results": ["experiment_results"],
    "experiments": ["experiment_results"],
    "llm_calls": ["experiment_results"],
    "front_members": ["pareto_front"],
    "prompt_events": ["promoted_prompts"],
    "prompts": ["prompt_registry"],
    "candidates": ["mutated_population"],
}

METRIC_MODELS = ("agent_prompt_metrics", "agent_health", "generation_front_stats", "promotion_history")

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
if not dbt_project.manifest_path.exists():  # never parsed on import: `make`, the CLI and the tests prepare it
    dbt_project.prepare_if_dev()
if not dbt_project.manifest_path.exists():
    raise RuntimeError(
        f"{dbt_project.manifest_path} is missing: run `make manifest` (or `genepool dbt-prepare`) before loading "
        "the code location"
    )


class GenepoolDbtTranslator(DagsterDbtTranslator):
    """Sources -> the Python assets that write them; models -> group "metrics"; tests -> checks."""

    def __init__(self) -> None:
        super().__init__(
            settings=DagsterDbtTranslatorSettings(
                enable_asset_checks=True,
                # experiments, experiment_results and llm_calls all come from one asset.
                enable_duplicate_source_asset_keys=True,
                # source tests run with the metrics (see the module docstring), not as checks on the
                # Python assets
                enable_source_tests_as_checks=False,
            )
        )

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source" and dbt_resource_props["source_name"] == "genepool":
            key = SOURCE_ASSET_KEYS.get(dbt_resource_props["name"])
            if key:
                return dg.AssetKey(key)
        return super().get_asset_key(dbt_resource_props)

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] in ("model", "seed", "snapshot"):
            return METRICS_GROUP
        return super().get_group_name(dbt_resource_props)


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=GenepoolDbtTranslator(),
    name="metrics_dbt_assets",
)
def metrics_dbt_assets(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    """`dbt build` of the metrics models (the selection Dagster asks for) and their tests; a failing test
    (model or source) fails the step."""
    for event in dbt.cli(["build"], context=context).stream():
        if isinstance(event, dg.AssetObservation) and (event.description or "").startswith(_DBT_FALLBACK):
            # a dbt source test: recorded on the Python asset it tests, said plainly (not as a fallback)
            event = dg.AssetObservation(asset_key=event.asset_key, metadata=event.metadata,
                                        description=SOURCE_TEST_DESCRIPTION)
        yield event


_DBT_FALLBACK = "Logging an `AssetObservation` instead of an `AssetCheckResult`"
SOURCE_TEST_DESCRIPTION = "dbt source test, run with the metrics refresh (metadata: status, failed rows)"


class _QuietSourceTests(logging.Filter):
    """dagster-dbt warns once per dbt test that is not an asset check; our source tests are not checks on
    purpose, so that warning is noise in every metrics run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DBT_FALLBACK)


logging.getLogger("dagster.builtin").addFilter(_QuietSourceTests())


# The models and every dbt model test.
metrics_asset_selection = dg.AssetSelection.assets(*metrics_dbt_assets.keys) | dg.AssetSelection.checks(
    *metrics_dbt_assets.check_keys
)
