"""The genepool code location: one ``dg.Definitions`` per area, merged.

Load it with ``dagster dev -w workspace.yaml`` (or ``dagster definitions validate -w workspace.yaml``).
Areas: the registry, one generation, the dbt metrics and the checks (``assets/defs.py``), the jobs
(``orchestration/jobs.py``), the sensors (below) and the resources chosen from the environment
(``orchestration/environment.py``). To add to the code location, add to an area or merge one more.
"""

from __future__ import annotations

import dagster as dg

from assets import checks
from assets.defs import checks_defs, generation_assets, generation_defs, metrics_defs, registry_assets, registry_defs
from assets.production import production_defs
from orchestration import environment, jobs
from orchestration.canary import canary_defs
from orchestration.environment import default_resources, llm_from_env, optimizer_from_env
from orchestration.sensors import metric_threshold_sensor, run_failure_recorder, trace_ingest_sensor


def sensor_defs() -> dg.Definitions:
    return dg.Definitions(sensors=[metric_threshold_sensor, trace_ingest_sensor, run_failure_recorder])


defs = dg.Definitions.merge(
    registry_defs(),
    generation_defs(),
    metrics_defs(),
    checks_defs(),
    jobs.defs(),
    sensor_defs(),
    production_defs(),  # production traces from Langfuse, so agents are watched after an approval
    canary_defs(),  # ... and without Langfuse: the production prompt on fixed train items after an approval
    environment.defs(),
)

# Kept for the CLI and benchmarks, which materialise areas directly with the same resources.
__all__ = [
    "checks",
    "default_resources",
    "defs",
    "generation_assets",
    "llm_from_env",
    "optimizer_from_env",
    "registry_assets",
]
