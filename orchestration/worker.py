"""The Celery app of a genepool run worker: ``genepool worker`` (= ``celery -A orchestration.worker worker``).

Each task is one whole Dagster run (one generation: its six steps in one process, in order), executed with the
run's own code location and the instance of ``DAGSTER_HOME/dagster.yaml``, which this module writes from the
environment on start. A worker needs GENEPOOL_DATABASE_URL (the shared PostgreSQL: genepool tables, the LLM
cache, the step outputs, Dagster's run storage) and GENEPOOL_CELERY_BROKER; it keeps nothing on local disk that
another machine needs.
"""

from __future__ import annotations

import sys

from orchestration.queue import LauncherConfigError, celery_settings, require_shared_database

try:
    require_shared_database("a genepool Celery worker")
    _settings = celery_settings()
except LauncherConfigError as _exc:
    print(f"genepool worker: {_exc}", file=sys.stderr)
    raise SystemExit(2) from None

import os

os.environ.setdefault("GENEPOOL_RUN_LAUNCHER", "celery")

from dagster_celery.config import DEFAULT_CONFIG
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from orchestration.cli import write_dagster_yaml

write_dagster_yaml()  # this machine's DAGSTER_HOME/dagster.yaml: the shared PostgreSQL, the same launcher

# the same app arguments as the CeleryRunLauncher the instance builds from dagster.yaml
app = make_app({"broker": _settings["broker"], "backend": _settings["backend"], "include": [],
                "config_source": dict(DEFAULT_CONFIG, **_settings["config_source"]), "task_default_queue": "dagster"})
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
