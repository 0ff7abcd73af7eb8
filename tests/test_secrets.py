"""Issue 7 point 5: planted secrets never leave the environment.

A real ``genepool run`` (CLI process, real Dagster on the test PostgreSQL, the code location's resources from
orchestration/environment.py) runs one tiny generation with two planted secrets:

- a database password: GENEPOOL_DATABASE_URL names a role that must authenticate with it. The embedded test
  server listens on a unix socket only and trusts local connections (initdb --auth-local=trust), so the test
  puts ``local all <role> scram-sha-256`` first in that server's pg_hba.conf: the password is really checked
  (a connection without it is refused). On an external test server (GENEPOOL_TEST_DATABASE_URL) whose
  pg_hba.conf is not ours, the test is skipped;
- an LLM API key for an openai_compatible provider pointed at the STUB server (tests/stub_llm_server.py), read
  from the variable named by ``api_key_env``; the stub's first answer is a 503 whose error body echoes the key.

Then both secrets are searched for in every text, varchar, json, jsonb and bytea column (bytea also
zlib-inflated, as Dagster stores snapshots) of every table of the genepool database and of Dagster's storage
database, in the Dagster event log and run config of every run, in the code location's repository snapshot
(what the UI and GraphQL serve: resources, their configured values and every job's config schema), in every
file the run left in its data folder and Dagster home (compute logs), and in the console output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value

from genepool import db as postgres
from tests.stub_llm_server import StubLLMServer
from tests.test_ui_graphql import TINY

ROOT = Path(__file__).resolve().parents[1]
TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb", "bytea", "xml")

SNAPSHOT = """
import sys
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from orchestration import definitions as d
sys.stdout.write(serialize_value(RepositorySnap.from_def(d.defs.get_repository_def())))
"""


def _password_role(pg_server_url: str) -> tuple[str, str, str]:
    """A role that must log in with a password, owning a fresh database: (its URL with the password, the
    password, the database name)."""
    if os.environ.get("GENEPOOL_TEST_DATABASE_URL"):
        pytest.skip("needs the embedded test server (its pg_hba.conf gets a password rule for one role)")
    tag = uuid.uuid4().hex[:8]
    role, password, dbname = f"gp_secret_{tag}", f"pw-{uuid.uuid4().hex}", f"gpsec_{tag}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER {role}')
        conn.execute(f'CREATE DATABASE "{dbname}_dagster" OWNER {role}')
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
        hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())  # first match wins: only this role
        conn.execute("SELECT pg_reload_conf()")
    url = postgres.with_user(postgres._with_database(pg_server_url, dbname), role, password)
    with pytest.raises(psycopg.OperationalError, match="password"):  # the password is really checked
        psycopg.connect(postgres.with_user(url, role), connect_timeout=5).close()
    psycopg.connect(url, connect_timeout=5).close()
    return url, password, dbname


def _grep_database(url: str, secrets: dict[str, str]) -> list[str]:
    """``table.column: secret name`` for every text-like column of every user table holding a secret."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        cols = conn.execute(
            "SELECT c.table_schema, c.table_name, c.column_name, c.data_type FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE t.table_type = 'BASE TABLE' AND c.table_schema NOT IN ('pg_catalog', 'information_schema')"
            " AND (c.data_type = ANY(%s) OR c.data_type = 'ARRAY')", (list(TEXT_TYPES),)).fetchall()
        assert len(cols) > 10, cols  # the search saw the tables
        for schema, table, column, _type in cols:
            where = f"{schema}.{table}.{column}"
            q = f'SELECT "{column}" FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL'
            for (value,) in conn.execute(q):
                if isinstance(value, (bytes, memoryview)):
                    raw = bytes(value)
                    try:
                        raw += zlib.decompress(raw)
                    except zlib.error:
                        pass
                    text = raw.decode("utf-8", errors="replace")
                else:
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                found += [f"{where}: {name}" for name, s in secrets.items() if s in text]
    return sorted(set(found))


@pytest.mark.probe
@pytest.mark.timeout(900)
def test_planted_database_password_and_api_key_never_leak(pg_server_url, tmp_path, probe):
    db_url, password, dbname = _password_role(pg_server_url)
    api_key = f"sk-planted-{uuid.uuid4().hex}"
    secrets = {"database password": password, "API key": api_key}
    dagster_url = postgres._with_database(db_url, f"{dbname}_dagster")  # Dagster's storage: the same password
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    echo = {"status": 503, "headers": {"Retry-After": "0"},
            "body": {"error": {"message": f"overloaded; your key Bearer {api_key} is fine", "key": api_key}}}
    with StubLLMServer(script=[echo]) as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_", "OPENAI_"))}
        env.update({
            "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "GENEPOOL_DATABASE_URL": db_url,
            "GENEPOOL_DAGSTER_DATABASE_URL": dagster_url, "GENEPOOL_DATA_DIR": str(data),
            "GENEPOOL_TEST_PLANTED_KEY": api_key, "GENEPOOL_OPTIMIZER": json.dumps(TINY),
            **{f"{p}_{k}": v for p in ("GENEPOOL_LLM", "GENEPOOL_REFLECTION")
               for k, v in (("PROVIDER", "openai_compatible"), ("BASE_URL", stub.base_url), ("MODEL", "stub"),
                            ("API_KEY_ENV", "GENEPOOL_TEST_PLANTED_KEY"), ("MAX_RETRIES", "2"))},
        })
        run = subprocess.run([sys.executable, "-m", "orchestration.cli", "run", "--agent", "support-desk",
                              "--no-metrics"], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=800)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        snap = subprocess.run([sys.executable, "-c", SNAPSHOT], cwd=str(ROOT), env=env, capture_output=True,
                              text=True, timeout=300)
        assert snap.returncode == 0, snap.stderr[-3000:]
    # the secrets were really used: the key went out as the Bearer token (and came back in a 503 body), and the
    # run wrote its rows through the password-protected role
    auth = {r["headers"].get("Authorization") for r in stub.requests}
    assert auth == {f"Bearer {api_key}"} and stub.statuses.get(503) == 1 and stub.chat_requests > 5
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM genepool.llm_calls").fetchone()[0] > 0
    assert "GENEPOOL_DATABASE_URL" in snap.stdout  # the resources name the variable (dg.EnvVar), not its value

    leaks = {"genepool database": _grep_database(postgres._with_database(pg_server_url, dbname), secrets),
             "Dagster storage database": _grep_database(postgres._with_database(pg_server_url, f"{dbname}_dagster"),
                                                        secrets)}
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        assert {r.job_name for r in runs} >= {"registry_job", "generation_job"}
        events = "\n".join(serialize_value(e) for r in runs for e in instance.all_logs(r.run_id))
        assert "STEP_SUCCESS" in events
        leaks["Dagster event log"] = [n for n, s in secrets.items() if s in events]
        config = "\n".join(json.dumps(instance.get_run_by_id(r.run_id).run_config, default=str) for r in runs)
        leaks["run config"] = [n for n, s in secrets.items() if s in config]
        leaks["instance configuration (the UI's Deployment page)"] = [
            n for n, s in secrets.items() if s in instance.info_str()]
    finally:
        instance.dispose()
    leaks["repository snapshot (UI, GraphQL)"] = [n for n, s in secrets.items() if s in snap.stdout]
    passfile = home / ".pgpass"  # the storage password, for libpq only: dagster.yaml names this file instead
    assert passfile.stat().st_mode & 0o777 == 0o600 and password in passfile.read_text()
    assert str(passfile) in (home / "dagster.yaml").read_text()
    files = [p for p in (*home.rglob("*"), *data.rglob("*"))
             if p.is_file() and p != passfile and p.stat().st_size < 50_000_000]
    assert files
    leaks["files"] = sorted({f"{p.relative_to(tmp_path)}: {n}" for p in files for n, s in secrets.items()
                             if s.encode() in p.read_bytes()})
    console = run.stdout + run.stderr + snap.stderr
    leaks["console"] = [n for n, s in secrets.items() if s in console]
    assert not any(leaks.values()), leaks
    probe("held: a planted database password and API key (echoed in a 503 body) appear in no table of either "
          "database, no event, run config, repository snapshot, file or console line",
          tables_searched="every text/varchar/json/jsonb/bytea column", runs=len(runs))


def test_redact_hides_a_password_given_as_a_url_parameter():
    url = "postgresql://alice:s3cret@db:5432/genepool?sslmode=require&password=p4ss&application_name=x"
    want = "postgresql://alice:***@db:5432/genepool?sslmode=require&password=***&application_name=x"
    assert postgres.redact(url) == want
    assert postgres.redact("postgresql:///genepool?host=/tmp&password=p4ss") == "postgresql:///genepool?host=/tmp&password=***"


def test_a_celery_broker_password_stays_out_of_dagster_yaml_and_the_instance_configuration(tmp_path, monkeypatch):
    """With GENEPOOL_RUN_LAUNCHER=celery the broker and backend URLs go into dagster.yaml, whose run launcher
    config the UI's Deployment page shows and every Celery launch packs: a URL with a password is written as
    ``{env: VAR}`` and resolved by Dagster when it loads the instance."""
    import yaml

    from orchestration.queue import dagster_yaml

    broker, backend = "redis://:br0ker-pw@127.0.0.1:6390/0", "redis://user:back3nd-pw@127.0.0.1:6390/1"
    env = {"GENEPOOL_RUN_LAUNCHER": "celery", "GENEPOOL_CELERY_BROKER": broker, "GENEPOOL_CELERY_BACKEND": backend,
           "GENEPOOL_DATABASE_URL": "postgresql://u@db/genepool"}
    text = dagster_yaml("sqlite", env=env)
    assert "br0ker-pw" not in text and "back3nd-pw" not in text
    launcher = yaml.safe_load(text)["run_launcher"]["config"]
    assert (launcher["broker"], launcher["backend"]) == ({"env": "GENEPOOL_CELERY_BROKER"},
                                                         {"env": "GENEPOOL_CELERY_BACKEND"})
    derived = yaml.safe_load(dagster_yaml("sqlite", env={**env, "GENEPOOL_CELERY_BACKEND": ""}))
    assert derived["run_launcher"]["config"]["backend"] == {"env": "GENEPOOL_CELERY_BROKER"}  # backend = broker
    plain = yaml.safe_load(dagster_yaml("sqlite", env={**env, "GENEPOOL_CELERY_BROKER": "redis://127.0.0.1:6390/0"}))
    assert plain["run_launcher"]["config"]["broker"] == "redis://127.0.0.1:6390/0"  # no secret: written as is
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(text.replace('storage:\n  postgres:\n    postgres_url: "sqlite"\n', ""))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with dg.DagsterInstance.from_config(str(home)) as inst:  # Dagster resolves the variables
        assert (inst.run_launcher.broker, inst.run_launcher.backend) == (broker, backend)
        shown = inst.info_str()
    assert "CeleryRunLauncher" in shown and "GENEPOOL_CELERY_BROKER" in shown
    assert "br0ker-pw" not in shown and "back3nd-pw" not in shown
