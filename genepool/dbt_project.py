"""The dbt metrics project (dbt_metrics/): connection environment and manifest preparation.

dbt reads its connection from environment variables (dbt_metrics/profiles.yml); ``dbt_env`` builds
them from a ``postgresql://`` URL, including the unix-socket form the embedded server uses
(``postgresql://postgres:@/genepool?host=/path/dir``), whose port is the one in the socket file
name ``.s.PGSQL.<port>`` (or line 4 of ``postmaster.pid``) in that folder.

The password goes to ``DBT_ENV_SECRET_GENEPOOL_PASSWORD``: dbt scrubs ``DBT_ENV_SECRET_*`` values
from its logs. Nothing here logs or stores it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from genepool.config import PROJECT_ROOT
from genepool.db import redact

DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_metrics"
METRICS_SCHEMA = "genepool_metrics"

ENV_HOST = "GENEPOOL_DBT_HOST"
ENV_PORT = "GENEPOOL_DBT_PORT"
ENV_USER = "GENEPOOL_DBT_USER"
ENV_PASSWORD = "DBT_ENV_SECRET_GENEPOOL_PASSWORD"
ENV_DBNAME = "GENEPOOL_DBT_DBNAME"
ENV_SCHEMA = "GENEPOOL_DBT_SCHEMA"
ENV_SSLMODE = "GENEPOOL_DBT_SSLMODE"
DBT_ENV_KEYS = (ENV_HOST, ENV_PORT, ENV_USER, ENV_PASSWORD, ENV_DBNAME, ENV_SCHEMA, ENV_SSLMODE)


class DbtConfigError(ValueError):
    """A database URL that cannot be turned into a dbt connection; the message says how to fix it."""


def socket_port(socket_dir: str | Path) -> int:
    """Port of the PostgreSQL server listening on a unix socket in ``socket_dir``."""
    d = Path(socket_dir)
    if not d.is_dir():
        raise DbtConfigError(
            f"database URL host={d} is not a folder; for a unix socket give the folder that holds "
            "'.s.PGSQL.<port>' (e.g. ?host=/path/to/pgdata)"
        )
    ports = sorted(
        int(p.name.rsplit(".", 1)[1])
        for p in d.glob(".s.PGSQL.*")
        if not p.name.endswith(".lock") and p.name.rsplit(".", 1)[1].isdigit()
    )
    if ports:
        return ports[0]
    pid_file = d / "postmaster.pid"
    if pid_file.exists():
        lines = pid_file.read_text().splitlines()
        if len(lines) >= 4 and lines[3].strip().isdigit():
            return int(lines[3].strip())
    raise DbtConfigError(
        f"no PostgreSQL socket ('.s.PGSQL.<port>') or postmaster.pid in {d}: is the server running? "
        "Start it (e.g. `genepool db start`) or add ?port=N to the database URL"
    )


def dbt_env(database_url: str, schema: str = METRICS_SCHEMA) -> dict[str, str]:
    """Environment variables that point dbt_metrics/profiles.yml at ``database_url``.

    Accepts ``postgresql://``, ``postgres://`` and ``postgresql+driver://`` URLs, with host:port or a
    unix socket folder as ``?host=/dir`` (or a percent-encoded path as host). Query ``port``,
    ``user``, ``password``, ``sslmode`` are honoured.
    """
    parts = urlsplit(database_url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise DbtConfigError(
            f"database URL {redact(database_url)!r} is not a postgresql:// URL; "
            "use e.g. postgresql://user:password@host:5432/genepool or postgresql://postgres:@/genepool?host=/socket/dir"
        )
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    dbname = unquote(parts.path.lstrip("/")) or query.get("dbname", "")
    if not dbname:
        raise DbtConfigError(
            f"database URL {redact(database_url)!r} names no database; add it after the host, e.g. .../genepool"
        )
    try:
        url_port = parts.port
    except ValueError as exc:
        raise DbtConfigError(f"database URL {redact(database_url)!r} has an invalid port: {exc}") from None
    host = query.get("host") or (unquote(parts.hostname) if parts.hostname else "")
    port_text = query.get("port") or (str(url_port) if url_port else "")
    if not host:
        host = "localhost"
    if host.startswith("/"):
        port = int(port_text) if port_text else socket_port(host)
    else:
        port = int(port_text) if port_text else 5432
    user = query.get("user") or (unquote(parts.username) if parts.username else "") or "postgres"
    password = query.get("password") or (unquote(parts.password) if parts.password else "")
    env = {
        ENV_HOST: host,
        ENV_PORT: str(port),
        ENV_USER: user,
        ENV_PASSWORD: password,
        ENV_DBNAME: dbname,
        ENV_SCHEMA: schema,
        ENV_SSLMODE: query.get("sslmode", "prefer"),
    }
    return env


_ENV_LOCK = threading.RLock()


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (dbt subprocesses inherit them)."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def dbt_executable() -> str:
    """The dbt CLI of this Python environment (not whatever ``dbt`` is first on PATH)."""
    exe = Path(sys.executable).with_name("dbt")
    return str(exe) if exe.exists() else "dbt"


def manifest_path(project_dir: Path = DBT_PROJECT_DIR) -> Path:
    return project_dir / "target" / "manifest.json"


def prepare_manifest(project_dir: Path = DBT_PROJECT_DIR, *, force: bool = False) -> Path:
    """Build ``target/manifest.json`` with ``dbt parse`` (no database connection needed).

    Outside ``dagster dev``, ``DbtProject.prepare_if_dev()`` does nothing, so tests, the CLI and
    deployments call this. It re-parses when a model, YAML or macro file is newer than the manifest.
    """
    path = manifest_path(project_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / ".prepare.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one parse at a time across processes
        if force or not _manifest_fresh(project_dir, path):
            _dbt_parse(project_dir, path)
    return path


def _manifest_fresh(project_dir: Path, path: Path) -> bool:
    if not path.exists():
        return False
    newest = max(
        (
            p.stat().st_mtime
            for p in project_dir.rglob("*")
            if p.suffix in (".sql", ".yml", ".yaml")
            and not {"target", "logs", "dbt_packages"} & set(p.relative_to(project_dir).parts)
        ),
        default=0.0,
    )
    return path.stat().st_mtime >= newest


def _dbt_parse(project_dir: Path, path: Path) -> None:
    env = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    proc = subprocess.run(
        [dbt_executable(), "parse", "--quiet", "--project-dir", str(project_dir), "--profiles-dir", str(project_dir),
         "--target-path", "target"],
        cwd=project_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"`dbt parse` of {project_dir} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
