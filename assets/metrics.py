"""The dbt metrics models as Dagster assets (group "metrics"), their dbt tests as asset checks.

dbt sources are mapped onto the Python assets that write the tables (see ``SOURCE_ASSET_KEYS``,
which agrees with ``meta.dagster.asset_key`` in dbt_metrics/models/sources.yml), so the models
hang under them in the asset graph. The dbt assets are not partitioned: they read all partitions.

The dbt manifest is never built on import: ``make manifest``, the CLI and the tests prepare it.
"""


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
                enable_source_tests_as_checks=True,
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
    """`dbt build` of the metrics models (the selection Dagster asks for) and their tests."""
    yield from dbt.cli(["build"], context=context).stream()


# The dbt source tests are asset checks on the *Python* assets (traces, prompt_registry, ...), run by
# the dbt op. A job that selects those Python assets would therefore pull the dbt op in to run them:
# subtract ``dbt_source_checks`` from such selections, e.g.
#   dg.define_asset_job("generation_job", selection=dg.AssetSelection.assets(...) - dbt_source_checks)
dbt_source_checks = dg.AssetSelection.checks(
    *[k for k in metrics_dbt_assets.check_keys if k.asset_key not in metrics_dbt_assets.keys]
)
# The models and every dbt test (model and source tests). AssetSelection.assets(metrics_dbt_assets)
# alone would leave out the source tests, whose target assets are not in the selection.
metrics_asset_selection = dg.AssetSelection.assets(*metrics_dbt_assets.keys) | dg.AssetSelection.checks(
    *metrics_dbt_assets.check_keys
)
