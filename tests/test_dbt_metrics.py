"""The dbt metrics project on a real PostgreSQL, built through Dagster (dagster-dbt).

One module-scoped database is seeded with realistic rows (registry through PromptRegistry, plain
INSERTs for the rest) and `dbt build` runs once through ``materialize([metrics_dbt_assets])``;
the tests then check the metric values, the asset checks the dbt tests became, and the mapping of
dbt sources onto the Python assets. A second database with a broken row shows a failing check.
"""

from __future__ import annotations

import itertools
import json
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import psycopg
import pytest

from assets.metrics import (
    METRIC_MODELS,
    SOURCE_ASSET_KEYS,
    dbt_project,
    metrics_dbt_assets,
)
from genepool import db as postgres
from genepool.core.genome import Genome
from genepool.db import Database, migrate
from genepool.dbt_project import DbtConfigError, dbt_env, prepare_manifest, socket_port
from genepool.registry import PromptRegistry
from resources.dbt import dbt_resource

AGENT = "support-desk"
PROD_LATENCIES = [10.0 * i for i in range(1, 21)]  # 20 recent traces of the production prompt
PROD_SUCCESS = [i % 4 != 0 for i in range(20)]  # 15 of 20 succeed
OLD_LATENCY = 1000.0  # one 10-day-old trace: outside agent_health's 7-day window


def _new_db(pg_server_url: str) -> Database:
    name = f"dbt_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres._with_database(pg_server_url, name)
    migrate(url)
    return Database(url)


def _trace(db, tid, prompt, success, latency, *, agent=AGENT, tokens=(30, 10), cost=0.002, age_days=0, error=None):
    db.execute(
        "INSERT INTO genepool.traces (id, agent_type, prompt_id, prompt_version, input, output, success,"
        " prompt_tokens, completion_tokens, cost_usd, latency_ms, error, created_at)"
        " VALUES (%s,%s,%s,%s,'in','out',%s,%s,%s,%s,%s,%s, now() - make_interval(days => %s))",
        (tid, agent, prompt.id, prompt.version, success, tokens[0], tokens[1], cost, latency, error, age_days),
    )


def seed(db: Database) -> dict:
    reg = PromptRegistry(db)
    p1 = reg.register(AGENT, Genome(role="You are a support-desk assistant."))
    reg.label(p1.id, "production", "seed", "initial prompt")
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES (%s,%s,1,42), (%s,%s,2,43)",
        (f"{AGENT}/g0001", AGENT, f"{AGENT}/g0002", AGENT),
    )
    p2 = reg.register(
        AGENT, Genome(role="You are a support-desk assistant.", instructions=("Answer with the label only.",)),
        parent_ids=[p1.id], experiment_id=f"{AGENT}/g0001", generation=1, operator="add_instruction",
    )
    p3 = reg.register(
        AGENT, Genome(role="You are a terse support-desk assistant."),
        parent_ids=[p1.id], experiment_id=f"{AGENT}/g0001", generation=1, operator="rewrite_role",
    )
    reg.label(p2.id, "candidate", "genepool", "beats production on validation")
    reg.approve(p2.id, "alice", "looks good")
    reg.label(p3.id, "candidate", "genepool", "cheaper")
    reg.reject(p3.id, "bob", "too terse")

    # traces: the old production prompt, the current one (recent + one old), another agent
    for i in range(4):
        _trace(db, f"t-old-{i}", p1, True, 50.0, age_days=3)
    for i, (ok, lat) in enumerate(zip(PROD_SUCCESS, PROD_LATENCIES, strict=True)):
        _trace(db, f"t-prod-{i:02d}", p2, ok, lat, cost=0.001 * (1 + i % 2), error=None if ok else "wrong label")
    _trace(db, "t-prod-ancient", p2, False, OLD_LATENCY, age_days=10)

    planner = reg.register("planner", Genome(role="You plan."))
    reg.label(planner.id, "production", "seed", "initial")
    for i in range(6):
        _trace(db, f"t-plan-{i}", planner, True, 100.0 + i, agent="planner", tokens=(80, 20), cost=0.01)
    reg.register("triage", Genome(role="You triage."))  # draft only: no production prompt

    # benchmark results inside g0001
    rows = [(p2.id, f"item{i}", i != 3, 40 + i) for i in range(4)] + [(p3.id, f"item{i}", i == 0, 20) for i in range(4)]
    for pid, item, ok, toks in rows:
        db.execute(
            "INSERT INTO genepool.experiment_results (experiment_id, prompt_id, item_id, split, role, success, score,"
            " output, prompt_tokens, completion_tokens, latency_ms) VALUES (%s,%s,%s,'validation','validation',%s,%s,"
            " 'x',%s,0,25)",
            (f"{AGENT}/g0001", pid, item, ok, 1.0 if ok else 0.0, toks),
        )
    # Pareto front of g0001: p2 and p3 feasible, p1 infeasible (a control regression)
    front = [(p2.id, 0, 0.75, 40.0, True), (p3.id, 0, 0.25, 20.0, True), (p1.id, 0, 1.0, 10.0, False)]
    for pid, rank, sr, toks, feasible in front:
        db.execute(
            "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
            " avg_latency_ms, control_regressions, feasible) VALUES (%s,%s,%s,%s,%s,30,%s,%s)",
            (f"{AGENT}/g0001", pid, rank, sr, toks, 0 if feasible else 1, feasible),
        )
    for pos, status in enumerate(["accepted", "accepted", "accepted", "rejected", "rejected"]):
        db.execute(
            "INSERT INTO genepool.candidates (experiment_id, prompt_id, position, operator, genome, status, reason)"
            " VALUES (%s,%s,%s,'add_instruction','{}',%s,%s)",
            (f"{AGENT}/g0001", p2.id if status == "accepted" else None, pos, status,
             "" if status == "accepted" else "sanity: injection phrase"),
        )
    for i in range(3):
        db.execute(
            "INSERT INTO genepool.llm_calls (request_hash, provider, model, purpose, partition_key, cached,"
            " prompt_tokens, completion_tokens, latency_ms, wall_ms, cost_usd) VALUES (%s,'llamacpp','smol','eval',"
            " %s,%s,10,5,20,20,0.001)",
            (f"h{i}", f"{AGENT}/g0001", i == 2),
        )
    return {"p1": p1, "p2": p2, "p3": p3, "planner": planner}


@pytest.fixture(scope="module")
def built(pg_server_url):
    db = _new_db(pg_server_url)
    prompts = seed(db)
    result = dg.materialize([metrics_dbt_assets], resources={"dbt": dbt_resource(db.url)}, raise_on_error=False)
    return db, prompts, result


def _one(db, sql, params=()):
    rows = db.fetchall(sql, params)
    assert len(rows) == 1, rows
    return rows[0]


def test_build_materialises_all_models(built):
    _, _, result = built
    assert result.success
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == set(METRIC_MODELS)


def test_agent_health_reads_current_production_and_recent_traces(built):
    db, p, _ = built
    row = _one(db, "SELECT * FROM genepool_metrics.agent_health WHERE agent_type = %s", (AGENT,))
    assert row["production_prompt_id"] == p["p2"].id  # p1 was archived when p2 was approved
    assert row["runs"] == 20  # the 10-day-old trace and p1's traces are not counted
    assert row["success_rate"] == pytest.approx(15 / 20)
    assert row["p95_latency_ms"] == pytest.approx(np.percentile(PROD_LATENCIES, 95))  # 190.5
    assert row["avg_cost_usd"] == pytest.approx(0.0015)
    assert row["errors"] == 5
    assert row["last_trace_id"] == "t-prod-19"
    agents = {r["agent_type"]: r for r in db.fetchall("SELECT * FROM genepool_metrics.agent_health")}
    assert set(agents) == {AGENT, "planner", "triage"}
    assert agents["triage"]["production_prompt_id"] is None and agents["triage"]["runs"] == 0
    assert agents["planner"]["success_rate"] == 1.0


def test_agent_prompt_metrics_per_source_and_prompt(built):
    db, p, _ = built
    t = _one(
        db, "SELECT * FROM genepool_metrics.agent_prompt_metrics WHERE data_source = 'traces' AND prompt_id = %s",
        (p["p2"].id,),
    )
    lat = [*PROD_LATENCIES, OLD_LATENCY]  # window = all history by default
    assert t["runs"] == 21 and t["successes"] == 15
    assert t["success_rate"] == pytest.approx(15 / 21)
    assert t["prompt_version"] == p["p2"].version
    assert t["p50_latency_ms"] == pytest.approx(np.percentile(lat, 50))
    assert t["p95_latency_ms"] == pytest.approx(np.percentile(lat, 95))
    assert t["total_tokens"] == 21 * 40 and t["avg_total_tokens"] == pytest.approx(40)
    assert t["errors"] == 5
    e = _one(
        db,
        "SELECT * FROM genepool_metrics.agent_prompt_metrics"
        " WHERE data_source = 'experiment_results' AND prompt_id = %s",
        (p["p2"].id,),
    )
    assert e["runs"] == 4 and e["success_rate"] == pytest.approx(0.75)
    assert e["total_tokens"] == 40 + 41 + 42 + 43


def _hv2(points):
    """Reference 2-D hypervolume: area of the union of rectangles [0,x]x[0,y] (inclusion-exclusion on a grid)."""
    xs = sorted({0.0} | {x for x, _ in points})
    area = 0.0
    for lo, hi in itertools.pairwise(xs):
        area += (hi - lo) * max((y for x, y in points if x >= hi), default=0.0)
    return area


def test_generation_front_stats(built):
    db, _, _ = built
    g1 = _one(db, "SELECT * FROM genepool_metrics.generation_front_stats WHERE experiment_id = %s", (f"{AGENT}/g0001",))
    assert g1["front_size"] == 3 and g1["feasible_front_size"] == 2
    assert g1["best_success"] == pytest.approx(0.75)  # the infeasible 1.0 does not count
    assert g1["min_avg_tokens"] == pytest.approx(20.0)
    # the one hypervolume definition (fixed reference point), the same in Python and dbt
    from genepool.core.hypervolume import front_hypervolume

    assert g1["hypervolume"] == pytest.approx(front_hypervolume([(0.75, 40.0, 30.0), (0.25, 20.0, 30.0)]))
    assert (g1["children_accepted"], g1["children_rejected"]) == (3, 2)
    assert g1["llm_calls"] == 3 and g1["llm_calls_uncached"] == 2 and g1["llm_cost_usd"] == pytest.approx(0.003)
    g2 = _one(db, "SELECT * FROM genepool_metrics.generation_front_stats WHERE experiment_id = %s", (f"{AGENT}/g0002",))
    assert (g2["front_size"], g2["hypervolume"], g2["children_accepted"]) == (0, 0.0, 0)


def test_promotion_history_in_order(built):
    db, p, _ = built
    rows = db.fetchall(
        "SELECT prompt_id, label, previous_label, actor, reason FROM genepool_metrics.promotion_history"
        " WHERE agent_type = %s ORDER BY event_id",
        (AGENT,),
    )
    assert [(r["prompt_id"], r["label"], r["actor"]) for r in rows] == [
        (p["p1"].id, "production", "seed"),
        (p["p2"].id, "candidate", "genepool"),
        (p["p1"].id, "archived", "alice"),
        (p["p2"].id, "production", "alice"),
        (p["p3"].id, "candidate", "genepool"),
        (p["p3"].id, "rejected", "bob"),
    ]
    assert rows[3]["reason"] == "looks good" and rows[3]["previous_label"] == "candidate"
    assert rows[2]["reason"] == f"replaced in production by {p['p2'].id}"


def _source_test_results(result) -> dict[tuple[str, str], str]:
    """(asset tested, dbt source test name) -> its status, from the observations the metrics run recorded."""
    from assets.metrics import SOURCE_TEST_DESCRIPTION

    out = {}
    for ev in result.get_asset_observation_events():
        obs = ev.event_specific_data.asset_observation
        if obs.description == SOURCE_TEST_DESCRIPTION:
            out[(obs.asset_key.to_user_string(), obs.metadata["unique_id"].value.split(".")[2])] = \
                obs.metadata["status"].value
    return out


def test_dbt_tests_ran_as_passing_asset_checks(built):
    _, _, result = built
    evals = {(e.asset_key.to_user_string(), e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    declared = {(k.asset_key.to_user_string(), k.name) for k in metrics_dbt_assets.check_keys}
    assert set(evals) == declared  # every dbt model test ran and reported as a Dagster asset check
    assert all(evals.values()), [k for k, ok in evals.items() if not ok]
    assert evals[("agent_health", "unique_agent_health_agent_type")]
    assert any(a == "promotion_history" and c.startswith("relationships_") for a, c in evals)
    # dbt source tests are checks on no asset (as checks on the Python assets, a UI Materialize of the generation
    # would run them ahead of the partition); they run in the same dbt build, recorded on the asset they test
    assert {a for a, _ in declared} <= set(METRIC_MODELS)
    sources = _source_test_results(result)
    assert any(a == "promoted_prompts" and "accepted_values" in t for a, t in sources)
    assert any(a == "promoted_prompts" and "references_table" in t and "prompt_id" in t for a, t in sources)
    assert set(sources.values()) == {"pass"}, sources
    assert len(declared) + len(sources) >= 40


def test_sources_map_to_the_python_assets_and_models_to_group_metrics():
    assert {k.to_user_string() for k in metrics_dbt_assets.keys} == set(METRIC_MODELS)
    assert {k.to_user_string() for k in metrics_dbt_assets.dependency_keys} == {
        "traces", "experiment_results", "pareto_front", "promoted_prompts", "prompt_registry", "mutated_population",
    }
    assert set(metrics_dbt_assets.group_names_by_key.values()) == {"metrics"}
    assert not metrics_dbt_assets.partitions_def
    # the YAML meta agrees with the translator's table
    manifest = json.loads(Path(dbt_project.manifest_path).read_text())
    for src in manifest["sources"].values():
        assert src["config"]["meta"]["dagster"]["asset_key"] == SOURCE_ASSET_KEYS[src["name"]], src["name"]


def test_failing_dbt_test_is_a_failed_check_and_skips_the_model(pg_server_url):
    db = _new_db(pg_server_url)
    seed(db)
    p = db.fetchone("SELECT id FROM genepool.prompts WHERE agent_type = 'planner'")
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES ('planner/g0001','planner',1,1)"
    )
    db.execute(
        "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens, avg_latency_ms)"
        " VALUES ('planner/g0001', %s, 0, 1.5, 10, 10)",  # a success rate above 1
        (p["id"],),
    )
    result = dg.materialize([metrics_dbt_assets], resources={"dbt": dbt_resource(db.url)}, raise_on_error=False)
    assert not result.success
    sources = _source_test_results(result)
    assert sources[("pareto_front", "source_value_between_genepool_front_members_success_rate__1__0")] == "fail"
    mats = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "generation_front_stats" not in mats  # dbt build skips models downstream of a failed test
    assert "agent_health" in mats


# --- connection environment ------------------------------------------------------------------------
def test_dbt_env_from_host_url():
    env = dbt_env("postgresql+psycopg2://gp%40x:s3cr%2Ft@db.example:6543/metrics?sslmode=require")
    assert env["GENEPOOL_DBT_HOST"] == "db.example" and env["GENEPOOL_DBT_PORT"] == "6543"
    assert env["GENEPOOL_DBT_USER"] == "gp@x" and env["DBT_ENV_SECRET_GENEPOOL_PASSWORD"] == "s3cr/t"
    assert env["GENEPOOL_DBT_DBNAME"] == "metrics" and env["GENEPOOL_DBT_SSLMODE"] == "require"
    assert env["GENEPOOL_DBT_SCHEMA"] == "genepool_metrics"
    assert dbt_env("postgres://u@h/db")["GENEPOOL_DBT_PORT"] == "5432"


def test_dbt_env_socket_port_from_socket_file_or_postmaster_pid(tmp_path):
    (tmp_path / ".s.PGSQL.7777").touch()
    (tmp_path / ".s.PGSQL.7777.lock").touch()
    env = dbt_env(f"postgresql://postgres:@/genepool?host={tmp_path}")
    assert (env["GENEPOOL_DBT_HOST"], env["GENEPOOL_DBT_PORT"]) == (str(tmp_path), "7777")
    other = tmp_path / "pid"
    other.mkdir()
    (other / "postmaster.pid").write_text(f"123\n{other}\n1700000000\n5433\n{other}\n")
    assert socket_port(other) == 5433
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DbtConfigError, match="no PostgreSQL socket"):
        socket_port(empty)


def test_dbt_env_rejects_bad_urls():
    with pytest.raises(DbtConfigError, match="not a postgresql:// URL"):
        dbt_env("mysql://u:pw@h/db")
    with pytest.raises(DbtConfigError, match="names no database"):
        dbt_env("postgresql://u@h:5432/")


def test_dbt_env_of_the_embedded_server_connects(pg_server_url):
    env = dbt_env(pg_server_url)
    with psycopg.connect(
        host=env["GENEPOOL_DBT_HOST"], port=env["GENEPOOL_DBT_PORT"], user=env["GENEPOOL_DBT_USER"],
        dbname=env["GENEPOOL_DBT_DBNAME"],
    ) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_prepare_manifest_is_fresh_and_lists_the_models():
    path = prepare_manifest()
    manifest = json.loads(path.read_text())
    models = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert models == set(METRIC_MODELS)


def test_selections_keep_dbt_out_of_python_jobs_and_all_tests_in_the_metrics_run():
    from assets.metrics import metrics_asset_selection
    from assets.partitions import generations_partitions

    @dg.asset(partitions_def=generations_partitions, name="traces")
    def traces_stand_in():
        """Stands in for the lead's Python `traces` asset (only its key and partitions matter here)."""

    defs = dg.Definitions(
        assets=[traces_stand_in, metrics_dbt_assets],
        jobs=[
            dg.define_asset_job("python_only", selection=dg.AssetSelection.assets("traces")),
            dg.define_asset_job("metrics", selection=metrics_asset_selection),
        ],
        resources={"dbt": dbt_resource("postgresql://u@localhost/db")},
    )
    python_job = defs.resolve_job_def("python_only")
    assert [n.name for n in python_job.graph.node_defs] == ["traces"]
    graph = defs.resolve_asset_graph()
    assert metrics_asset_selection.resolve_checks(graph) == set(metrics_dbt_assets.check_keys)
    # no dbt test is a check on the Python asset: selecting it (as the UI's Materialize does, with all its
    # checks) never pulls the dbt op in
    assert not graph.get(dg.AssetKey("traces")).check_keys
