"""A code location for the canary test under a real dagster-daemon (tests/test_ui_daemon.py).

The real canary (sensor, job, asset), the real metrics refresh (trace_ingest_sensor -> the dbt assets) and the
real threshold sensor, on short intervals; the task model is the STUB server named by GENEPOOL_TEST_LLM_URL;
``generation_job`` is a one-step TEST DOUBLE (the threshold sensor's request is what is under test).
"""

import os  # no `from __future__ import annotations`: Dagster checks the context annotation at runtime

import dagster as dg

from assets.metrics import metrics_dbt_assets
from assets.partitions import generations_partitions
from orchestration.canary import canary_job, canary_sensor, production_canary
from orchestration.sensors import build_metric_threshold_sensor, build_trace_ingest_sensor
from resources import LLMResource, PostgresResource
from resources.dbt import dbt_resource


@dg.asset(partitions_def=generations_partitions, name="generation_stand_in")
def generation_stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": str(context.partition_key)})


DB_URL = os.environ["GENEPOOL_TEST_DB_URL"]
defs = dg.Definitions(
    assets=[generation_stand_in, production_canary, metrics_dbt_assets],
    jobs=[canary_job,
          dg.define_asset_job("generation_job", selection=[generation_stand_in], partitions_def=generations_partitions,
                              executor_def=dg.in_process_executor)],
    sensors=[
        canary_sensor,
        build_trace_ingest_sensor(minimum_interval_seconds=2),
        build_metric_threshold_sensor(minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING),
    ],
    executor=dg.in_process_executor,
    resources={
        "postgres": PostgresResource(database_url=DB_URL),
        "llm": LLMResource(provider="openai_compatible", base_url=os.environ["GENEPOOL_TEST_LLM_URL"], model="stub"),
        "dbt": dbt_resource(DB_URL),
    },
)
