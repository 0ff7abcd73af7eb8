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
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import requests
from dagster_graphql import DagsterGraphQLClient

from assets.partitions import add_partitions, run_partition_tags
from genepool.db import migrate
from tests.conftest import _new_database
from tests.scale.procs import stop
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


@dataclass
class UI:
    """A running dagster-webserver on the real code location, its GraphQL client and its instance."""

    client: DagsterGraphQLClient
    instance: dg.DagsterInstance
    log: Path

    def wait(self, run_id: str, timeout: float = 600) -> dg.DagsterRun:
        run = _wait_run(self.instance, run_id, timeout, self.log)
        assert run.status == dg.DagsterRunStatus.SUCCESS, self.log.read_text(errors="replace")[-3000:]
        return run


@pytest.fixture(scope="module")
def ui(pg_server_url, tmp_path_factory):
    """One webserver for the module's tests (starting it is most of their wall time)."""
    tmp_path = tmp_path_factory.mktemp("ui")
    db_url = _new_database(pg_server_url, "gp")
    migrate(db_url)
    dagster_url = _new_database(pg_server_url, "dagui").replace("postgresql://", "postgresql+psycopg2://", 1)
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
            yield UI(DagsterGraphQLClient("127.0.0.1", port_number=port), instance, log)
        finally:
            stop(proc, timeout=30, first=signal.SIGINT)
            instance.dispose()


def _steps(instance: dg.DagsterInstance, run_id: str) -> tuple[set[str], set[int]]:
    """The step keys a run started, and the process ids they ran in."""
    recs = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_START).records
    return ({r.event_log_entry.dagster_event.step_key for r in recs},
            {r.event_log_entry.dagster_event.pid for r in recs})


@pytest.mark.timeout(900)
def test_ui_launch_of_a_generation_partition_and_of_one_check(ui):
    client, instance = ui.client, ui.instance
    add_partitions(instance, [KEY])  # the grid cell: agent support-desk × generation g0001

    # 1. the job a person launches from the UI (Jobs -> generation_job -> partition -> Launch)
    run_id = client.submit_job_execution("generation_job", tags=run_partition_tags(KEY))
    run = ui.wait(run_id)
    assert run.job_name == "generation_job"
    step_keys, pids = _steps(instance, run_id)
    assert "metrics_dbt_assets" not in step_keys and "traces" in step_keys
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
    check_run = ui.wait(answer["run"]["runId"], 300)
    [ev] = _check_evaluations(instance, check_run.run_id)
    assert (ev.check_name, ev.partition, ev.passed) == ("budget_not_exceeded", CELL, True)


# What the UI's asset-launch code sends (dagster-webserver 1.13.27, ui-core/src/assets/
# LaunchAssetExecutionButton.tsx, LaunchAssetChoosePartitionsDialog.tsx, launchpad/ConfigFetch.tsx), replayed
# query by query: load the selected asset nodes (LaunchAssetLoaderQuery / LaunchAssetLoaderJobQuery), pick the
# job (getCommonJob), fetch the partition's tags (ConfigPartitionForAssetJobQuery), launch one run
# (LaunchPipelineExecution with executionParamsForAssetJob: the assets and every check of theirs in that job).
ASSET_NODE_FIELDS = """
    assetKey { path } groupName jobNames
    assetChecksOrError { ... on AssetChecks { checks { name jobNames } } }
"""
ASSETS_OF_JOB = "query ($job: PipelineSelector!) { assetNodes(pipeline: $job) {" + ASSET_NODE_FIELDS + "} }"
ALL_ASSETS = "query { assetNodes {" + ASSET_NODE_FIELDS + "} }"
PARTITION_TAGS = """
query ($repositoryName: String!, $repositoryLocationName: String!, $jobName: String!, $partitionName: String!,
       $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                           repositoryLocationName: $repositoryLocationName}) {
    ... on Pipeline { partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
      runConfigOrError { ... on PartitionRunConfig { yaml } }
      tagsOrError { ... on PartitionTags { results { key value } } } } }
  }
}
"""
LAUNCH_PIPELINE = """
mutation ($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId jobName } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""
REPO = {"repositoryLocationName": "genepool", "repositoryName": "__repository__"}


def _ui_materialize(ui: UI, assets: list[dict], partition: str, preferred_job: str | None = None) -> str:
    """The Materialize button on ``assets`` for one partition, as the UI does it; returns the run id."""
    common = [j for j in assets[0]["jobNames"] if all(j in a["jobNames"] for a in assets)]
    job = next((j for j in common if j == preferred_job), common[0])  # getCommonJob
    keys = [{"path": a["assetKey"]["path"]} for a in assets]
    part = ui.client._execute(PARTITION_TAGS, {**{"repositoryName": REPO["repositoryName"],
                                                  "repositoryLocationName": REPO["repositoryLocationName"]},
                                               "jobName": job, "partitionName": partition, "assetKeys": keys})
    partition_data = part["pipelineOrError"]["partition"]
    checks = [{"name": c["name"], "assetKey": {"path": a["assetKey"]["path"]}}
              for a in assets for c in a["assetChecksOrError"]["checks"] if job in c["jobNames"]]
    params = {
        "mode": "default",
        "executionMetadata": {"tags": partition_data["tagsOrError"]["results"]},
        "runConfigData": partition_data["runConfigOrError"]["yaml"],
        "selector": {**REPO, "pipelineName": job, "assetSelection": keys, "assetCheckSelection": checks},
    }
    answer = ui.client._execute(LAUNCH_PIPELINE, {"executionParams": params})["launchPipelineExecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


def _asset_of(event: dg.DagsterEvent) -> str | None:
    key = event.asset_key or getattr(event.event_specific_data, "asset_key", None)  # a check evaluation's asset
    return key.to_user_string() if key else None


def _run_shape(ui: UI, run_id: str) -> dict:
    """What a generation run did: its steps (and processes), the checks it executed (and for which partition),
    and the order of its events (asset keys materialised, dbt results)."""
    run = ui.wait(run_id)
    step_keys, pids = _steps(ui.instance, run_id)
    evals = _check_evaluations(ui.instance, run_id)
    events = [r.event_log_entry.dagster_event for r in ui.instance.get_records_for_run(run_id, limit=100000).records]
    kinds = [(e.event_type_value, _asset_of(e)) for e in events if e]
    return {"job": run.job_name, "steps": step_keys, "pids": pids, "partition": run.tags.get("dagster/partition"),
            "checks": {(e.asset_key.to_user_string(), e.check_name) for e in evals},
            "check_partitions": {e.partition for e in evals}, "kinds": kinds}


@pytest.mark.timeout(900)
def test_ui_materialize_of_a_partition_is_the_same_run_as_generation_job(ui):
    """The asset graph's Materialize (Dagster's ``__ASSET_JOB``) and Jobs -> generation_job -> Materialize run the
    same steps in one process with the same four partitioned checks, and no dbt test runs ahead of the
    partition's assets (the dbt source tests are not checks on them)."""
    from assets.common import GROUP

    cells = {"asset graph": "critic|g0001", "generation_job": "critic|g0002"}
    add_partitions(ui.instance, ["critic/g0001", "critic/g0002"])
    every = ui.client._execute(ALL_ASSETS)["assetNodes"]
    group = [a for a in every if a["groupName"] == GROUP]  # select the "generation" group in the asset graph
    assert len(group) == 6
    # the asset graph's Materialize picks the first job all selected assets share: Dagster's implicit
    # asset job (job names are sorted, "__ASSET_JOB" < "generation_job"), never generation_job by name
    assert group[0]["jobNames"] == ["__ASSET_JOB", "generation_job"]
    # what the Materialize button offers: each asset's checks in that job; none is a dbt test
    offered = {c["name"] for a in group for c in a["assetChecksOrError"]["checks"]}
    assert offered == GENERATION_CHECKS

    graph_run = _run_shape(ui, _ui_materialize(ui, group, cells["asset graph"]))
    # Jobs -> generation_job -> Materialize all: the job page's asset nodes, with generation_job preferred
    job_assets = ui.client._execute(ASSETS_OF_JOB, {"job": {**REPO, "pipelineName": "generation_job"}})["assetNodes"]
    job_run = _run_shape(ui, _ui_materialize(ui, job_assets, cells["generation_job"], "generation_job"))

    assert (graph_run["job"], job_run["job"]) == ("__ASSET_JOB", "generation_job")
    assert (graph_run["partition"], job_run["partition"]) == (cells["asset graph"], cells["generation_job"])
    assert graph_run["steps"] == job_run["steps"] == {
        "traces", "failure_clusters", "mutated_population", "experiment_results", "pareto_front", "promoted_prompts",
        # the four partitioned checks, each its own step after its asset
        "traces_traces_schema", "experiment_results_budget_not_exceeded", "pareto_front_front_not_empty",
        "promoted_prompts_promoted_no_control_regression",
    }
    assert len(graph_run["pids"]) == len(job_run["pids"]) == 1  # in-process: the code location's default
    assert graph_run["checks"] == job_run["checks"]
    assert {name for _, name in graph_run["checks"]} == GENERATION_CHECKS
    assert graph_run["check_partitions"] == {cells["asset graph"]}
    assert job_run["check_partitions"] == {cells["generation_job"]}
    for shape in (graph_run, job_run):
        # no dbt at all: no dbt step, no dbt test result (check or observation) before or after the assets
        assert "metrics_dbt_assets" not in shape["steps"]
        assert not [k for k in shape["kinds"] if k[0] == "ASSET_OBSERVATION"]
        # every check ran after its asset was materialised for the partition (not against older rows)
        materialised = {a: i for i, (kind, a) in enumerate(shape["kinds"]) if kind == "ASSET_MATERIALIZATION"}
        assert len(materialised) == 6
        checked = [(i, a) for i, (kind, a) in enumerate(shape["kinds"]) if kind == "ASSET_CHECK_EVALUATION"]
        assert len(checked) == 4 and all(i > materialised[a] for i, a in checked), shape["kinds"]
