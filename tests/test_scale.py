"""Scale-out: the shared PostgreSQL IO manager, the run queue configuration, and (marked ``scale``) the whole
fleet: Redis, two Celery workers in private mount namespaces, dagster-daemon, a stub OpenAI-compatible server.

Fast tests here run in ``make test``; ``make test-scale`` runs the ``scale`` ones (a few minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from orchestration.queue import AGENT_TAG, LauncherConfigError, dagster_yaml
from resources import PostgresIOManager, PostgresResource
from resources.io_manager import decode, encode
from tests.scale import procs

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(trace_items=6, population_size=3, n_targets=3, n_controls=2, validate_top=1, validation_items=4,
             test_items=3, max_rollouts=40)


# --- the IO manager ------------------------------------------------------------------------------------------
def test_encode_prefers_json_and_pickles_what_json_would_change():
    assert encode({"a": [1, 2.5, "x", None]})[0] == "json"
    assert encode({1: "int key"})[0] == "pickle"  # JSON would turn the key into "1"
    df = pd.DataFrame({"x": [1, 2]})
    df.attrs["skipped_for_budget"] = ["p1"]
    fmt, data = encode(df)
    assert fmt == "pickle"
    back = decode(fmt, data, "t")
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == {"skipped_for_budget": ["p1"]}
    with pytest.raises(ValueError, match="format 'yaml'"):
        decode("yaml", b"", "(asset 'x')")


def test_io_manager_round_trip_by_asset_and_partition_and_a_clear_miss(db_url):
    parts = dg.DynamicPartitionsDefinition(name="generations")

    @dg.asset(partitions_def=parts)
    def up(context) -> dict:
        return {"partition": context.partition_key, "n": len(context.partition_key)}

    @dg.asset(partitions_def=parts)
    def down(up: dict) -> pd.DataFrame:
        return pd.DataFrame([up])

    res = {"io_manager": PostgresIOManager(database_url=db_url)}
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("generations", ["a/g0001", "b/g0001"])
        for key in ("a/g0001", "b/g0001"):
            assert dg.materialize([up, down], instance=inst, resources=res, partition_key=key).success
        rows = PostgresResource(database_url=db_url).database().fetchall(
            "SELECT asset_key, partition_key, format FROM genepool.io_outputs ORDER BY 1, 2")
        assert [(r["asset_key"], r["partition_key"], r["format"]) for r in rows] == [
            ("down", "a/g0001", "pickle"), ("down", "b/g0001", "pickle"), ("up", "a/g0001", "json"),
            ("up", "b/g0001", "json")]
        # a step re-executed alone (another process, no local files) loads its input from PostgreSQL
        again = dg.materialize([up, down], instance=inst, resources=res, partition_key="b/g0001", selection=["down"])
        assert again.output_for_node("down").to_dict("records") == [{"partition": "b/g0001", "n": 7}]
        inst.add_dynamic_partitions("generations", ["c/g0001"])
        miss = dg.materialize([up, down], instance=inst, resources=res, partition_key="c/g0001", selection=["down"],
                              raise_on_error=False)
        assert not miss.success
        err = next(e for e in miss.all_events if e.is_step_failure).event_specific_data.error
        assert "no stored output for (asset 'up', partition 'c/g0001') in genepool.io_outputs" in str(err.message) + \
            "".join(str(c.message) for c in ([err.cause] if err.cause else []))


def test_code_location_uses_the_postgres_io_manager_not_the_filesystem_one(monkeypatch, db_url):
    monkeypatch.setenv("GENEPOOL_DATABASE_URL", db_url)
    from orchestration import definitions as d

    assert isinstance(d.default_resources()["io_manager"], PostgresIOManager)
    assert isinstance(d.defs.resources["io_manager"], PostgresIOManager)


# --- the run queue configuration -----------------------------------------------------------------------------
def test_dagster_yaml_queues_one_generation_per_agent_with_run_monitoring(tmp_path):
    text = dagster_yaml("postgresql+psycopg2://u:p@/dagster?host=/tmp", env={})
    cfg = yaml.safe_load(text)
    coord = cfg["run_coordinator"]
    assert coord["class"] == "QueuedRunCoordinator"
    assert coord["config"]["tag_concurrency_limits"] == [
        {"key": AGENT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": "dagster/partition/agent", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    # what the daemon decides with it: a UI-launched run (only Dagster's partition tags) waits behind a running
    # CLI generation of the same agent, a run of another agent does not
    from dagster._utils.tags import TagConcurrencyLimitsCounter

    def run_tags(key: str, extra: dict) -> dg.DagsterRun:
        agent, gen = key.split("|")
        return dg.DagsterRun(job_name="generation_job", tags={
            "dagster/partition": key, "dagster/partition/agent": agent, "dagster/partition/generation": gen, **extra})

    running = run_tags("support-desk|g0001", {AGENT_TAG: "support-desk"})
    counter = TagConcurrencyLimitsCounter(coord["config"]["tag_concurrency_limits"], [running])
    assert counter.is_blocked(run_tags("support-desk|g0002", {}))
    assert not counter.is_blocked(run_tags("critic|g0001", {}))
    assert cfg["run_monitoring"]["enabled"] is True
    assert "run_launcher" not in cfg  # the default launcher on one machine
    # Dagster accepts it (the instance is built from the file, its coordinator is the queued one)
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_yaml("sqlite", env={}).replace(
        'storage:\n  postgres:\n    postgres_url: "sqlite"\n', ""))
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert type(inst.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert inst.run_monitoring_enabled


def test_celery_launcher_config_and_its_clear_errors():
    env = {"GENEPOOL_RUN_LAUNCHER": "celery", "GENEPOOL_CELERY_BROKER": "redis://127.0.0.1:6390/0",
           "GENEPOOL_DATABASE_URL": "postgresql://u:p@db/genepool"}
    cfg = yaml.safe_load(dagster_yaml("postgresql+psycopg2://u:p@db/dagster", env=env))
    assert cfg["run_launcher"]["class"] == "CeleryRunLauncher"
    assert cfg["run_launcher"]["config"]["backend"] == "redis://127.0.0.1:6390/0"  # a real result backend
    vis = cfg["run_launcher"]["config"]["config_source"]["broker_transport_options"]["visibility_timeout"]
    assert vis >= 3600
    assert cfg["run_monitoring"]["start_timeout_seconds"] == vis  # a run may wait in Redis for a free worker
    no_db = {k: v for k, v in env.items() if k != "GENEPOOL_DATABASE_URL"}
    with pytest.raises(LauncherConfigError, match="needs GENEPOOL_DATABASE_URL"):
        dagster_yaml("x", env=no_db)
    with pytest.raises(LauncherConfigError, match="GENEPOOL_CELERY_BROKER"):
        dagster_yaml("x", env={**env, "GENEPOOL_CELERY_BROKER": ""})
    with pytest.raises(LauncherConfigError, match="rpc://"):
        dagster_yaml("x", env={**env, "GENEPOOL_CELERY_BROKER": "amqp://h//", "GENEPOOL_CELERY_BACKEND": "rpc://"})
    with pytest.raises(LauncherConfigError, match="GENEPOOL_RUN_LAUNCHER='k9s' is unknown"):
        dagster_yaml("x", env={"GENEPOOL_RUN_LAUNCHER": "k9s"})


def test_worker_without_shared_database_fails_with_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GENEPOOL_DATABASE_URL"}
    env.update(GENEPOOL_CELERY_BROKER="redis://127.0.0.1:1/0", GENEPOOL_DATA_DIR=str(tmp_path))
    for argv in ([sys.executable, "-c", "import orchestration.worker"],
                 [sys.executable, "-m", "orchestration.cli", "worker"]):
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert p.returncode == 2, p.stderr
        lines = [ln for ln in p.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and "needs GENEPOOL_DATABASE_URL" in lines[0], p.stderr
    assert not (tmp_path / "pg").exists()  # no embedded server was started for the worker


# --- two "machines": a step re-executed in another mount namespace ---------------------------------------------
def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _step(local: Path, db_url: str, llm_url: str, key: str, select: list[str], io: str) -> dict:
    argv = [sys.executable, str(ROOT / "tests/scale/step.py"), "--db-url", db_url, "--llm-url", llm_url,
            "--partition", key, "--io", io, "--storage", str(local), "--optimizer", json.dumps(SMALL)]
    for s in select:
        argv += ["--select", s]
    p = subprocess.run(procs.in_private_namespace(argv, local), capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    out = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert p.returncode == 0 and out, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(out[-1])


@pytest.mark.skipif(not _unshare_works(), reason="unshare -m is not permitted here (needs root or user namespaces)")
def test_a_step_re_executed_on_another_machine_needs_the_shared_io_manager(db_url, tmp_path):
    from orchestration import definitions as d

    assert dg.materialize(d.registry_assets, resources={"postgres": PostgresResource(database_url=db_url)}).success
    local = tmp_path / "local"  # the same path on both "machines", a private tmpfs on each
    local.mkdir()
    stub = procs.StubLLM(tmp_path, latency_ms=5)
    try:
        for io, key in (("filesystem", "support-desk/g0001"), ("postgres", "support-desk/g0002")):
            first = _step(local, db_url, stub.url, key, ["traces"], io)
            assert first["success"], first
            second = _step(local, db_url, stub.url, key, ["failure_clusters"], io)
            if io == "filesystem":  # negative control: the other machine cannot see the pickled traces
                assert not second["success"]
                assert "No such file or directory" in second["error"] or "FileNotFoundError" in second["error"]
            else:
                assert second["success"], second
        assert os.listdir(local) == []  # nothing was written to the host's folder
    finally:
        stub.stop()


# --- the fleet: Redis, two Celery workers (private disks), dagster-daemon, the run queue -------------------------
LLM_CONCURRENCY = 4
RPM_LIMIT = 60  # the token bucket shared through PostgreSQL: 60 requests at once, then 1/s (it runs dry here)
EVERY_429 = 11
FLEET_OPTIMIZER = {**SMALL, "seed": 77}


def _user_agent(folder: Path) -> Path:
    items = []
    for i in range(48):
        label = ("positive", "negative", "neutral")[i % 3]
        split = "train" if i < 30 else ("validation" if i < 40 else "test")
        items.append({"id": f"m{i}", "input": f"Mood of message {i}: {'great' if label == 'positive' else 'meh'}",
                      "expected": label, "checker": "regex", "split": split, "task": "mood",
                      "checker_args": {"pattern": f"^{label}$"}})
    (folder / "mood.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    f = folder / "agents.json"
    f.write_text(json.dumps({"mood-desk": {"benchmark": "mood.jsonl",
                                           "seed_prompt": "You label the mood of a message for {{ agent_type }}.",
                                           "instruction_pool": ["Answer with one word."]}}))
    return f


def _fleet_env(base: dict, db_url: str, dagster_url: str, stub_url: str, redis_url: str, agents_file: Path,
               local: Path) -> dict:
    env = {k: v for k, v in base.items() if not k.startswith(("GENEPOOL_", "LANGFUSE_"))}
    env.update({
        "GENEPOOL_DATABASE_URL": db_url, "GENEPOOL_DAGSTER_DATABASE_URL": dagster_url,
        "GENEPOOL_RUN_LAUNCHER": "celery", "GENEPOOL_CELERY_BROKER": f"{redis_url}/0",
        "GENEPOOL_CELERY_BACKEND": f"{redis_url}/1",
        "GENEPOOL_LLM_PROVIDER": "openai_compatible", "GENEPOOL_LLM_BASE_URL": stub_url, "GENEPOOL_LLM_MODEL": "stub",
        "GENEPOOL_REFLECTION_PROVIDER": "openai_compatible", "GENEPOOL_REFLECTION_BASE_URL": stub_url,
        "GENEPOOL_REFLECTION_MODEL": "stub",
        "GENEPOOL_LLM_CONCURRENCY": str(LLM_CONCURRENCY), "GENEPOOL_LLM_RPM_LIMIT": str(RPM_LIMIT),
        "GENEPOOL_OPTIMIZER": json.dumps(FLEET_OPTIMIZER), "GENEPOOL_AGENTS_FILE": str(agents_file),
        "GENEPOOL_DATA_DIR": str(local), "DAGSTER_HOME": str(local / "dagster_home"),
        "GENEPOOL_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    })
    return env


ROW_QUERIES = {
    "traces": "SELECT partition_key, item_id, prompt_id, output, success FROM genepool.traces",
    "candidates": "SELECT experiment_id, position, operator, status, prompt_id, parent_ids FROM genepool.candidates",
    "experiment_results": "SELECT experiment_id, prompt_id, item_id, role, output, success"
                          " FROM genepool.experiment_results",
    "front_members": "SELECT experiment_id, prompt_id, rank, success_rate, feasible FROM genepool.front_members",
    "prompts": "SELECT id, agent_type, version, parent_ids, experiment_id FROM genepool.prompts",
    "prompt_events": "SELECT prompt_id, label FROM genepool.prompt_events",
}


def _rows(url: str) -> dict[str, list]:
    from genepool.db import Database

    db = Database(url)
    try:
        return {t: sorted(json.dumps(r, sort_keys=True, default=str) for r in db.fetchall(q))
                for t, q in ROW_QUERIES.items()}
    finally:
        db.close()


def _genepool(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(procs.BIN / "genepool"), *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)


@pytest.mark.scale
@pytest.mark.timeout(1500)
@pytest.mark.skipif(not _unshare_works(), reason="unshare -m is not permitted here (needs root or user namespaces)")
def test_fleet_of_two_celery_workers_runs_queued_generations_like_one_process(fresh_database_url, tmp_path):
    db_url, dagster_url = fresh_database_url("scale"), fresh_database_url("scaledagster")
    agents_file = _user_agent(tmp_path)
    local = tmp_path / "local"  # every worker's "own disk": the same path, a private tmpfs in each namespace
    local.mkdir()
    redis = stub = daemon = None
    workers: list = []
    try:
        redis = procs.Redis(tmp_path)
        stub = procs.StubLLM(tmp_path, latency_ms=50, every_429=EVERY_429, retry_after=0.1)
        base = _fleet_env(os.environ, db_url, dagster_url, stub.url, redis.url, agents_file, local)
        # the control machine (CLI + daemon) has its own DAGSTER_HOME in the host's namespace
        ctl = {**base, "GENEPOOL_DATA_DIR": str(tmp_path / "ctl"), "DAGSTER_HOME": str(tmp_path / "ctl/home")}
        p = _genepool(ctl, "dagster-home")
        assert p.returncode == 0, p.stderr
        for name in ("w1", "w2"):
            argv = procs.in_private_namespace(
                [str(procs.BIN / "genepool"), "worker", "--name", f"{name}@genepool", "--loglevel", "INFO"], local)
            workers.append(procs.start(argv, tmp_path / f"{name}.log", env=base))
        for name, w in zip(("w1", "w2"), workers, strict=True):
            procs.wait_for(lambda n=name: "ready." in (tmp_path / f"{n}.log").read_text(), 120, f"worker {name}", w,
                           tmp_path / f"{name}.log")

        # everything is queued first (nothing dequeues without the daemon), then the daemon starts: the queue,
        # not the order of submission, decides what runs in parallel
        plan = [("support-desk", 1), ("critic", 1), ("mood-desk", 1), ("support-desk", 2)]
        run_ids = {}
        for agent, gen in plan:
            p = _genepool(ctl, "run", "--agent", agent, "--generation", str(gen), "--submit")
            assert p.returncode == 0, p.stdout + p.stderr
            run_ids[(agent, gen)] = p.stdout.split(" as run ")[1].split()[0]
        with dg.DagsterInstance.from_config(str(tmp_path / "ctl/home")) as inst:
            assert {inst.get_run_by_id(r).status.value for r in run_ids.values()} == {"QUEUED"}
        daemon = procs.start([str(procs.BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                             tmp_path / "daemon.log", env=ctl)

        with dg.DagsterInstance.from_config(str(tmp_path / "ctl/home")) as inst:
            def finished():
                recs = [inst.get_run_record_by_id(r) for r in run_ids.values()]
                return all(r is not None and r.dagster_run.is_finished for r in recs) and recs

            recs = procs.wait_for(finished, 1200, "the four queued generations", daemon, tmp_path / "daemon.log")
            by = dict(zip(run_ids, recs, strict=True))
            statuses = {k: r.dagster_run.status.value for k, r in by.items()}
            assert set(statuses.values()) == {"SUCCESS"}, (statuses, (tmp_path / "w1.log").read_text()[-3000:])
            # every run carries its agent tag (the queue's concurrency key)
            assert all(r.dagster_run.tags[AGENT_TAG] == k[0] for k, r in by.items())
            # two generations of one agent never overlapped; the queue ran g0002 after g0001
            a, b = by[("support-desk", 1)], by[("support-desk", 2)]
            assert a.end_time <= b.start_time
            # ... while generations of different agents did run at the same time
            assert any(x.start_time < y.end_time and y.start_time < x.end_time
                       for kx, x in by.items() for ky, y in by.items() if kx[0] < ky[0])
            task_ids = {k: r.dagster_run.tags["dagster-celery/task_id"] for k, r in by.items()}

        # both workers ran something (each logs the Celery task ids it received)
        ran = {name: {k for k, t in task_ids.items() if t in (tmp_path / f"{name}.log").read_text()}
               for name in ("w1", "w2")}
        assert ran["w1"] and ran["w2"], ran
        assert ran["w1"] | ran["w2"] == set(plan) and not (ran["w1"] & ran["w2"])

        # the LLM traffic: concurrent, bounded, rate-limited, 429s retried
        stats = stub.stats()
        (tmp_path / "stub_stats.json").write_text(json.dumps({k: v for k, v in stats.items() if k != "spans"}))
        assert stats["refused_429"] >= 1 and stats["answered"] > stats["refused_429"]
        assert 1 < stats["peak_in_flight"] <= LLM_CONCURRENCY * len(workers), stats["peak_in_flight"]
        times = sorted(stats["times"])
        assert len(times) > RPM_LIMIT  # more requests than the bucket holds: the limit had to hold them back
        cap, rate = RPM_LIMIT, RPM_LIMIT / 60
        worst = max(j - i + 1 - (cap + rate * (times[j] - times[i])) for i in range(len(times))
                    for j in range(i, len(times)))
        assert worst <= 1, f"{worst} requests above the token bucket"

        # the same rows as one in-process run of the same plan with the same seed (same LLM answers: the
        # reference database gets the fleet's LLM cache, so latencies are identical too)
        ref_url = fresh_database_url("scaleref")
        from genepool.db import Database, migrate

        migrate(ref_url)
        src, dst = Database(db_url), Database(ref_url)
        cache = src.fetchall("SELECT * FROM genepool.llm_cache")
        cols = list(cache[0])
        dst.executemany(f"INSERT INTO genepool.llm_cache ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})",
                        [tuple(json.dumps(v) if isinstance(v, dict) else v for v in r.values()) for r in cache])
        ref_local = tmp_path / "ref"
        ref = {**_fleet_env(os.environ, ref_url, fresh_database_url("scalerefdagster"), stub.url, redis.url,
                            agents_file, ref_local), "GENEPOOL_RUN_LAUNCHER": "default"}
        stub.reset()
        for agent, gen in plan:
            p = _genepool(ref, "run", "--agent", agent, "--generation", str(gen), "--no-metrics")
            assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
        assert stub.stats()["requests"] == 0  # served from the cache
        fleet_rows, ref_rows = _rows(db_url), _rows(ref_url)
        assert all(fleet_rows[t] for t in ("traces", "candidates", "experiment_results", "front_members"))
        for t in ROW_QUERIES:
            assert fleet_rows[t] == ref_rows[t], t

        # a deliberate re-run (--rerun: the generation is closed) through the queue sends no request
        p = _genepool(
            ctl, "run", "--agent", "critic", "--generation", "1", "--submit", "--wait", "--rerun", timeout=600
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert stub.stats()["requests"] == 0
    finally:
        procs.stop(daemon)
        for w in workers:
            procs.stop(w)
        if stub:
            stub.stop()
        if redis:
            redis.stop()


def test_deploy_examples_agree_with_the_generated_configuration():
    env = {"GENEPOOL_RUN_LAUNCHER": "celery", "GENEPOOL_CELERY_BROKER": "redis://redis.internal:6379/0",
           "GENEPOOL_CELERY_BACKEND": "redis://redis.internal:6379/1",
           "GENEPOOL_DATABASE_URL": "postgresql://genepool:PASSWORD@db.internal:5432/genepool"}
    generated = yaml.safe_load(dagster_yaml("postgresql+psycopg2://genepool:PASSWORD@db.internal:5432/dagster", env))
    assert yaml.safe_load((ROOT / "deploy/dagster-celery.yaml").read_text()) == generated
    k8s = yaml.safe_load((ROOT / "deploy/dagster-k8s.yaml").read_text())
    assert k8s["run_coordinator"] == {**generated["run_coordinator"], "config": {
        k: v for k, v in generated["run_coordinator"]["config"].items() if k != "dequeue_interval_seconds"}}
    assert k8s["run_launcher"]["class"] == "K8sRunLauncher" and k8s["run_monitoring"]["enabled"] is True
    helm = yaml.safe_load((ROOT / "deploy/helm-values.yaml").read_text())
    limits = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert limits == generated["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert helm["runLauncher"]["type"] == "K8sRunLauncher" and helm["dagsterDaemon"]["runMonitoring"]["enabled"]
