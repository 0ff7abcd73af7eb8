"""A small code location for tests that run a real dagster-daemon (tests/test_ui_daemon.py).

It has the real threshold sensor (on, 2 s interval, thresholds from GENEPOOL_THRESHOLDS) and a one-step
test double named ``generation_job`` on the real agent × generation partitions: the sensor, the partitions
and the launched run are real; the generation's LLM work is replaced by one step that records its key.
"""

import os  # no `from __future__ import annotations`: Dagster checks the context annotation at runtime

import dagster as dg

from assets.partitions import generations_partitions
from orchestration.sensors import build_metric_threshold_sensor, run_failure_recorder
from resources import PostgresResource


@dg.asset(partitions_def=generations_partitions, name="generation_stand_in")
def generation_stand_in(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"partition": str(context.partition_key)})


defs = dg.Definitions(
    assets=[generation_stand_in],
    jobs=[dg.define_asset_job("generation_job", selection=[generation_stand_in], partitions_def=generations_partitions,
                              executor_def=dg.in_process_executor)],
    sensors=[
        build_metric_threshold_sensor(minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING),
        run_failure_recorder,
    ],
    resources={"postgres": PostgresResource(database_url=os.environ["GENEPOOL_TEST_DB_URL"])},
)
