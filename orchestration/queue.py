"""The run queue and the run launcher of the Dagster instance, chosen from the environment.

``dagster_yaml(...)`` is the text `genepool dagster-home` writes to ``DAGSTER_HOME/dagster.yaml``:

- storage on genepool's PostgreSQL;
- the ``QueuedRunCoordinator`` with ``tag_concurrency_limits`` rules on ``AGENT_TAG`` and on Dagster's own
  ``dagster/partition/agent`` tag, so a run launched by hand from the asset graph is queued too (one generation per
  agent type at a time, different agent types in parallel, at most ``GENEPOOL_MAX_CONCURRENT_RUNS`` in all);
- run monitoring on (a run whose worker died is marked failed; a redelivered run is ignored);
- the run launcher: in-process subprocesses by default (``GENEPOOL_RUN_LAUNCHER`` unset or ``default``), or
  ``celery``: a ``CeleryRunLauncher`` on ``GENEPOOL_CELERY_BROKER`` (e.g. ``redis://host:6379/0``) whose workers
  run ``genepool worker``. Outside the default, ``GENEPOOL_DATABASE_URL`` is mandatory: every machine must share
  one PostgreSQL, never start an embedded server of its own.

Kubernetes: see deploy/ (the Helm chart writes its own dagster.yaml; deploy/dagster-k8s.yaml is the example).
"""

from __future__ import annotations

import json
import os

# The same key the sensors put on the runs they request (orchestration/sensors.py AGENT_TAG).
AGENT_TAG = "genepool/agent_type"
PARTITION_AGENT_TAG = "dagster/partition/agent"  # Dagster's tag for the ``agent`` dimension of a partition key
LAUNCHERS = ("default", "celery")
# Above the longest generation: a Redis broker redelivers a task not acknowledged within this time.
DEFAULT_VISIBILITY_TIMEOUT_S = 12 * 3600


class LauncherConfigError(ValueError):
    """The environment names a run launcher it does not fully configure (one line, with the fix)."""


def run_tags(partition_key: str, trigger: str, rerun: bool = False) -> dict[str, str]:
    """Tags of a generation run: its agent × generation partition (Dagster's tags of that cell, from the
    library's key ``<agent>/gNNNN``), its agent type (the queue's concurrency key), its trigger; with ``rerun``
    the tag that lets it re-run a closed generation."""
    from assets.partitions import RERUN_TAG, parse_partition_key, run_partition_tags

    agent, _ = parse_partition_key(partition_key)
    tags = {**run_partition_tags(partition_key), AGENT_TAG: agent, "genepool/trigger": trigger}
    if rerun:
        tags[RERUN_TAG] = "true"
    return tags


def launcher_kind(env: dict[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    kind = (env.get("GENEPOOL_RUN_LAUNCHER") or "default").strip().lower()
    if kind not in LAUNCHERS:
        raise LauncherConfigError(
            f"GENEPOOL_RUN_LAUNCHER={kind!r} is unknown; use one of {', '.join(LAUNCHERS)} (Kubernetes: see deploy/)"
        )
    return kind


def require_shared_database(role: str, env: dict[str, str] | None = None) -> str:
    """GENEPOOL_DATABASE_URL, or one clear error: a worker never starts an embedded PostgreSQL of its own."""
    env = os.environ if env is None else env
    url = (env.get("GENEPOOL_DATABASE_URL") or "").strip()
    if not url:
        raise LauncherConfigError(
            f"{role} needs GENEPOOL_DATABASE_URL (the PostgreSQL every machine shares, e.g. "
            "postgresql://genepool:PASSWORD@db-host:5432/genepool); the embedded server is for one machine only"
        )
    return url


def celery_settings(env: dict[str, str] | None = None) -> dict:
    """Broker, result backend and Celery options of the CeleryRunLauncher and of `genepool worker`."""
    env = os.environ if env is None else env
    broker = (env.get("GENEPOOL_CELERY_BROKER") or "").strip()
    if not broker.startswith(("redis://", "rediss://", "amqp://", "pyamqp://")):
        raise LauncherConfigError(
            f"GENEPOOL_CELERY_BROKER={broker!r} must be a broker URL, e.g. redis://127.0.0.1:6379/0"
        )
    backend = (env.get("GENEPOOL_CELERY_BACKEND") or "").strip() or (
        broker if broker.startswith(("redis://", "rediss://")) else ""
    )
    if not backend or backend.startswith("rpc://"):
        raise LauncherConfigError(
            "GENEPOOL_CELERY_BACKEND must be a real result backend (e.g. redis://127.0.0.1:6379/1): run monitoring "
            "reads task states from it, which rpc:// cannot answer"
        )
    raw = env.get("GENEPOOL_CELERY_VISIBILITY_TIMEOUT_S") or str(DEFAULT_VISIBILITY_TIMEOUT_S)
    try:
        visibility = int(raw)
        if visibility <= 0:
            raise ValueError
    except ValueError:
        raise LauncherConfigError(
            f"GENEPOOL_CELERY_VISIBILITY_TIMEOUT_S={raw!r} must be a positive number of seconds above the longest "
            "generation"
        ) from None
    return {
        "broker": broker,
        "backend": backend,
        "config_source": {
            "broker_transport_options": {"visibility_timeout": visibility},
            "result_backend_transport_options": {"visibility_timeout": visibility},
            "worker_prefetch_multiplier": 1,
        },
    }


def _max_concurrent_runs(env: dict[str, str]) -> int:
    raw = env.get("GENEPOOL_MAX_CONCURRENT_RUNS") or "8"
    try:
        n = int(raw)
        if n < 1:
            raise ValueError
    except ValueError:
        raise LauncherConfigError(f"GENEPOOL_MAX_CONCURRENT_RUNS={raw!r} must be a whole number >= 1") from None
    return n


def _start_timeout(kind: str, env: dict[str, str]) -> int:
    if kind == "celery":
        return celery_settings(env)["config_source"]["broker_transport_options"]["visibility_timeout"]
    return 180


def _url_or_env(url: str, var: str) -> str:
    """A broker/backend URL for dagster.yaml; one with a password as ``{"env": VAR}`` (Dagster reads the variable
    when it loads the instance), so the instance configuration the UI shows and run launches carry no secret."""
    import re

    return json.dumps({"env": var} if re.search(r"://[^/@]*:[^/@]+@", url) else url)


def dagster_yaml(storage_url: str, env: dict[str, str] | None = None) -> str:
    """The instance configuration (see the module docstring). JSON strings are valid YAML scalars."""
    env = os.environ if env is None else env
    kind = launcher_kind(env)
    lines = [
        "# Written by `genepool dagster-home`: Dagster's instance storage on genepool's PostgreSQL,",
        "# a run queue with one generation per agent type at a time, run monitoring, the run launcher.",
        "storage:",
        "  postgres:",
        f"    postgres_url: {json.dumps(storage_url)}",
        "run_coordinator:",
        "  module: dagster._core.run_coordinator",
        "  class: QueuedRunCoordinator",
        "  config:",
        f"    max_concurrent_runs: {_max_concurrent_runs(env)}",
        "    tag_concurrency_limits:",
        f"      - key: {json.dumps(AGENT_TAG)}",
        "        value:",
        "          applyLimitPerUniqueValue: true",
        "        limit: 1",
        # the tag Dagster itself puts on every run of an agent|generation partition: a run launched by hand from
        # the asset graph carries no genepool tag, and is still queued behind a running generation of its agent
        f"      - key: {json.dumps(PARTITION_AGENT_TAG)}",
        "        value:",
        "          applyLimitPerUniqueValue: true",
        "        limit: 1",
        "    dequeue_interval_seconds: 1",
        "run_monitoring:",
        "  enabled: true",
        # a run launched onto Celery waits in the broker until a worker is free (STARTING meanwhile): with the
        # celery launcher it may wait as long as a generation lasts, so it is failed only after visibility_timeout
        f"  start_timeout_seconds: {_start_timeout(kind, env)}",
        "  poll_interval_seconds: 5",
        "  max_resume_run_attempts: 0  # a generation is re-run from the LLM cache, never resumed mid-step",
        # the library's own loggers (genepool.*: per-candidate progress, budget notes) in each run's log view
        "python_logs:",
        "  managed_python_loggers:",
        "    - genepool",
        "  python_log_level: INFO",
    ]
    if kind == "celery":
        require_shared_database("the celery run launcher", env)
        c = celery_settings(env)
        backend_var = "GENEPOOL_CELERY_BACKEND" if (env.get("GENEPOOL_CELERY_BACKEND") or "").strip() else (
            "GENEPOOL_CELERY_BROKER")  # the backend defaults to the broker
        lines += [
            "run_launcher:",
            "  module: dagster_celery.launcher",
            "  class: CeleryRunLauncher",
            "  config:",
            f"    broker: {_url_or_env(c['broker'], 'GENEPOOL_CELERY_BROKER')}",
            f"    backend: {_url_or_env(c['backend'], backend_var)}",
            f"    config_source: {json.dumps(c['config_source'])}",
        ]
    lines += ["telemetry:", "  enabled: false", ""]
    return "\n".join(lines)
