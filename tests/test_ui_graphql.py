"""The UI's path, for real: ``dagster-webserver`` on 127.0.0.1 serving the real code location
(orchestration/definitions.py), driven through Dagster's GraphQL API (dagster-graphql's client).

The task model is a STUB OpenAI-compatible server on 127.0.0.1 (tests/stub_llm_server.py, deterministic
echo answers): the run, the steps, the checks, PostgreSQL and Dagster are the real ones.

- launching ``generation_job`` for a partition gives a run named ``generation_job`` whose steps ran in one
  process (the in-process executor), with the four generation checks evaluated *for that partition* and no
  dbt step (the dbt source tests run with the metrics, not here);
- a UI-style execution of one asset check for a chosen partition (what the check's Execute button sends)
  succeeds and its evaluation names the partition.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from assets.partitions import add_partitions, run_partition_tags
from tests.stub_llm_server import StubLLMServer

ROOT = Path(__file__).resolve().parents[1]
KEY = "support-desk/g0001"  # the library's key
CELL = "support-desk|g0001"  # Dagster's agent × generation key of it
TINY = {"trace_items": 3, "population_size": 1, "n_targets": 1, "n_controls": 1, "validate_top": 1,
        "validation_items": 2, "test_items": 1, "max_rollouts": 12}
GENERATION_CHECKS = {"traces_schema", "front_not_empty", "promoted_no_control_regression", "budget_not_exceeded"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_run(instance: dg.DagsterInstance, run_id: str, timeout: float, log: Path) -> dg.DagsterRun:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(1.0)
    raise AssertionError(f"run {run_id} did not finish; webserver log tail:\n{log.read_text(errors='replace')[-3000:]}")


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list:
    recs = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in recs]


LAUNCH_CHECK = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId jobName } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""


@pytest.mark.timeout(900)
def test_ui_launch_of_a_generation_partition_and_of_one_check(db_url, fresh_database_url, tmp_path):
    dagster_url = fresh_database_url("dagui").replace("postgresql://", "postgresql+psycopg2://", 1)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(json.dumps({
        "storage": {"postgres": {"postgres_url": dagster_url}},
        # no daemon in this test: launch at once instead of queueing (the daemon path is test_ui_daemon.py)
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "telemetry": {"enabled": False},
    }))
    port = _free_port()
    log = home / "webserver.log"
    with StubLLMServer() as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_"))}
        env.update({
            "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "GENEPOOL_DATABASE_URL": db_url,
            "GENEPOOL_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "stub-key",
            "GENEPOOL_OPTIMIZER": json.dumps(TINY),
            **{f"{p}_{k}": v for p in ("GENEPOOL_LLM", "GENEPOOL_REFLECTION")
               for k, v in (("PROVIDER", "openai_compatible"), ("BASE_URL", stub.base_url), ("MODEL", "stub"))},
        })
        instance = dg.DagsterInstance.from_config(str(home))
        add_partitions(instance, [KEY])  # the grid cell: agent support-desk × generation g0001
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("dagster-webserver")), "-w", str(ROOT / "workspace.yaml"),
                 "-h", "127.0.0.1", "-p", str(port)],
                cwd=str(ROOT), env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            end = time.monotonic() + 240
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                assert proc.poll() is None, f"the webserver exited:\n{log.read_text(errors='replace')[-3000:]}"
                assert time.monotonic() < end, f"the webserver did not answer:\n{log.read_text()[-3000:]}"
                time.sleep(1.0)
            client = DagsterGraphQLClient("127.0.0.1", port_number=port)

            # 1. the job a person launches from the UI (Jobs -> generation_job -> partition -> Launch)
            run_id = client.submit_job_execution("generation_job", tags=run_partition_tags(KEY))
            run = _wait_run(instance, run_id, 600, log)
            assert run.status == dg.DagsterRunStatus.SUCCESS, log.read_text(errors="replace")[-3000:]
            assert run.job_name == "generation_job"
            steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
            step_keys = {r.event_log_entry.dagster_event.step_key for r in steps}
            assert "metrics_dbt_assets" not in step_keys and "traces" in step_keys
            pids = {r.event_log_entry.dagster_event.pid for r in steps}
            assert len(pids) == 1  # one process: the in-process executor
            evals = _check_evaluations(instance, run_id)
            assert {e.check_name for e in evals} == GENERATION_CHECKS
            assert {e.partition for e in evals} == {CELL}

            # 2. one check executed for a chosen partition (the check's Execute button)
            params = {
                "selector": {"repositoryLocationName": "genepool", "repositoryName": "__repository__",
                             "jobName": "__ASSET_JOB", "assetSelection": [],
                             "assetCheckSelection": [{"assetKey": {"path": ["experiment_results"]},
                                                      "name": "budget_not_exceeded"}]},
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in run_partition_tags(KEY).items()]},
                "mode": "default", "runConfigData": "{}",
            }
            answer = client._execute(LAUNCH_CHECK, {"params": params})["launchRun"]
            assert answer["__typename"] == "LaunchRunSuccess", answer
            check_run = _wait_run(instance, answer["run"]["runId"], 300, log)
            assert check_run.status == dg.DagsterRunStatus.SUCCESS, log.read_text(errors="replace")[-3000:]
            [ev] = _check_evaluations(instance, check_run.run_id)
            assert (ev.check_name, ev.partition, ev.passed) == ("budget_not_exceeded", CELL, True)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            instance.dispose()
