"""The `genepool` command line.

    genepool demo [--agent support-desk]      # start PostgreSQL, run the next generation, print a summary
    genepool run --agent critic [--generation N] [--submit [--wait]]
    genepool worker [--name N] [--queue Q]   # a Celery run worker (GENEPOOL_RUN_LAUNCHER=celery)
    genepool prompts [--agent A] [--state candidate]
    genepool lineage PROMPT_ID
    genepool approve PROMPT_ID --by NAME --reason TEXT
    genepool reject PROMPT_ID --by NAME --reason TEXT
    genepool web [--port 8765]                # the approval page on 127.0.0.1
    genepool dagster-home                     # write DAGSTER_HOME/dagster.yaml (PostgreSQL storage)
    genepool db url|stop
    genepool doctor                           # one completion of the configured model in a child process
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import time
from pathlib import Path

from genepool.config import DEFAULT_AGENT, dagster_home, data_dir


def _db(start: bool = False):
    from genepool.db import Database

    return Database.from_env(start=start)  # only demo/run start a stopped embedded server


def write_dagster_yaml() -> Path:
    """DAGSTER_HOME/dagster.yaml: run, event log and schedule storage on the same PostgreSQL, the queued run
    coordinator (one generation per agent type at a time), run monitoring and the run launcher
    (see orchestration/queue.py)."""
    from genepool.db import resolve_urls
    from orchestration.queue import launcher_kind, require_shared_database

    if launcher_kind() != "default":  # checked before anything could start an embedded server
        require_shared_database(f"GENEPOOL_RUN_LAUNCHER={launcher_kind()}")
    home = dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    url = resolve_urls().dagster
    rest = url.split("://", 1)[1]
    url = "postgresql+psycopg2://" + rest  # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3
    url = _password_to_passfile(url, home)  # no password in dagster.yaml
    from orchestration.queue import dagster_yaml

    text = dagster_yaml(url)  # storage, run queue (per-agent limit), run monitoring, run launcher
    path = home / "dagster.yaml"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def _password_to_passfile(url: str, home: Path) -> str:
    """A storage URL whose password moved to ``DAGSTER_HOME/.pgpass`` (mode 0600, read by libpq through the
    ``passfile`` parameter), so dagster.yaml, which Dagster's processes and pages read, holds no secret."""
    import re
    from urllib.parse import quote, unquote

    m = re.match(r"^(?P<scheme>[\w+]+://)(?P<user>[^:@/?]*):(?P<pw>[^@/?]*)@(?P<rest>.*)$", url)
    if not m or not m.group("pw"):
        return url
    passfile = home / ".pgpass"
    esc = [unquote(v).replace("\\", "\\\\").replace(":", "\\:") for v in (m.group("user"), m.group("pw"))]
    fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"*:*:*:{esc[0] or '*'}:{esc[1]}\n")
    os.chmod(passfile, 0o600)
    rest = m.group("rest")
    sep = "&" if "?" in rest else "?"
    return f"{m.group('scheme')}{m.group('user')}@{rest}{sep}passfile={quote(str(passfile), safe='/')}"


def _instance():
    import dagster as dg

    write_dagster_yaml()
    return dg.DagsterInstance.get()


def _partition_to_run(instance, agent: str, generation: int | None, queued_is_taken: bool = False) -> str:
    """The requested generation, else an unfinished latest one (resume), else the next one. With
    ``queued_is_taken`` a latest generation that is queued or running counts as taken (submit the next one:
    the run queue starts it after that one)."""
    import dagster as dg

    from assets.partitions import (
        PARTITION_TAG,
        InvalidPartition,
        add_partitions,
        dagster_key,
        partition_key,
        started_generations,
    )

    _ACTIVE_STATUSES = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                        dg.DagsterRunStatus.STARTED]

    try:
        dagster_key(agent, 1 if generation is None else generation)  # a known agent type and a generation >= 0
    except InvalidPartition as exc:
        raise SystemExit(str(exc)) from None
    if generation is not None:
        key = partition_key(agent, generation)
    else:
        db = _db()
        gens = started_generations(instance, db, agent)
        key = partition_key(agent, gens[-1] + 1 if gens else 1)
        if gens:
            latest = partition_key(agent, gens[-1])
            row = db.fetchone("SELECT finished_at FROM genepool.experiments WHERE id = %s", (latest,))
            mats = (row is not None and row["finished_at"] is not None) or instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("promoted_prompts"),
                                      asset_partitions=[str(dagster_key(agent, gens[-1]))]), limit=1
            ).records
            active = queued_is_taken and instance.get_runs(
                filters=dg.RunsFilter(tags={PARTITION_TAG: str(dagster_key(agent, gens[-1]))},
                                      statuses=_ACTIVE_STATUSES), limit=1)
            if not mats and not active:
                key = latest  # the latest generation did not finish: resume it (served from the cache)
    add_partitions(instance, [key])  # the agent and the generation number of the grid, when new
    return key


def run_generation_in_dagster(agent: str, generation: int | None = None, metrics: bool = True,
                              rerun: bool = False) -> dict:
    """Run the code location's ``generation_job`` for one partition in this process (recorded in the
    PostgreSQL-backed instance under the job's name, like a run from the UI or the sensor). ``rerun`` tags
    the run ``genepool/rerun=true``: needed to re-run a closed generation (its promotion ran, or a later one
    exists); an unfinished one resumes without it."""
    from genepool.dbt_project import prepare_manifest

    prepare_manifest()  # the code location never parses dbt on import
    from orchestration import definitions as d
    from orchestration.sweep import host_tags, sweep_dead_runs

    instance = _instance()
    for swept in sweep_dead_runs(instance, _db()):  # a run whose process died must not block this agent
        print(f"note: run {swept.run_id[:8]} ({swept.partition_key or swept.job_name}) was left running by a process"
              " that is gone; marked failed (genepool.run_failures)", flush=True)
    # the summary is what a person reads; step-by-step logs stay in the run's page (`make dev`)
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("GENEPOOL_LOG_LEVEL", "WARNING")}}}}
    tags = {"genepool/trigger": "cli", "genepool/agent_type": agent, **host_tags()}
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # the code location's own named jobs, run in this process: the same run as the UI's or the sensor's
    res = d.defs.get_job_def("registry_job").execute_in_process(
        instance=instance, run_config=quiet, tags={k: v for k, v in tags.items() if k != "genepool/agent_type"},
        raise_on_error=False,
    )
    timings["registry"] = time.perf_counter() - t0
    if not res.success:
        raise SystemExit("materialising prompt_registry/benchmark failed; see `dagster dev` for the run")
    key = _partition_to_run(instance, agent, generation)
    from assets.partitions import RERUN_TAG, dagster_key_of

    if rerun:
        tags[RERUN_TAG] = "true"
    print(f"running generation {key} (traces -> failure_clusters -> mutated_population -> experiment_results"
          " -> pareto_front -> promoted_prompts) ...", flush=True)
    t0 = time.perf_counter()
    from dagster._core.utils import make_new_run_id

    from orchestration.progress import RunProgress

    job = d.defs.get_job_def("generation_job")
    run_id = make_new_run_id()
    steps = [a.node_def.name for a in d.generation_assets]  # the six asset steps (the checks' steps not counted)
    budget = d.optimizer_from_env().max_rollouts
    # a bar on a terminal (steps, candidates, rollouts of the budget, success so far), plain lines otherwise
    with RunProgress(instance, run_id, steps, _db(), key, budget=budget):
        res = job.execute_in_process(
            instance=instance, partition_key=dagster_key_of(key), run_config=quiet, tags=tags, raise_on_error=False,
            run_id=run_id,
        )
    timings["generation"] = time.perf_counter() - t0
    if not res.success:
        failures = [e.message for e in res.all_events if e.is_failure]
        raise SystemExit(
            f"generation {key} failed (run {res.run_id}); re-run `genepool run --agent {agent}` to resume from the "
            "LLM cache.\n" + "\n".join(failures[:5])
        )
    out = {
        "partition_key": key,
        "run_id": res.run_id,
        "front": res.output_for_node("pareto_front"),
        "promoted": res.output_for_node("promoted_prompts"),
        "clusters": res.output_for_node("failure_clusters"),
        "population": res.output_for_node("mutated_population"),
    }
    if metrics:
        t0 = time.perf_counter()
        print("refreshing the dbt metrics ...", flush=True)
        # dagster-dbt writes dbt's raw log to sys.stdout; keep it off the console unless --verbose (it stays in
        # the run's page) and show its tail only when the refresh failed
        dbt_log = io.StringIO()
        verbose = os.environ.get("GENEPOOL_LOG_LEVEL", "WARNING").upper() != "WARNING"
        with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(dbt_log):
            m = d.defs.get_job_def("metrics_job").execute_in_process(
                instance=instance, run_config=quiet,
                tags={k: v for k, v in tags.items() if k != "genepool/agent_type"}, raise_on_error=False,
            )
        if not m.success and not verbose:
            print("\n".join(dbt_log.getvalue().splitlines()[-20:]), file=sys.stderr)
        timings["dbt_metrics"] = time.perf_counter() - t0
        out["metrics_ok"] = m.success
    out["timings"] = timings
    return out


def submit_generation(agent: str, generation: int | None = None, wait: bool = False, timeout_s: float = 86400,
                      rerun: bool = False) -> dict:
    """Submit one generation partition to the instance's run queue (``dagster job launch``) instead of
    materialising it here: the daemon dequeues it (one generation per agent type at a time) and the run launcher
    starts it, e.g. on a Celery worker. The registry assets are materialised here first (a few queries)."""
    import subprocess
    import uuid

    import dagster as dg

    from genepool.dbt_project import prepare_manifest
    from orchestration.queue import run_tags

    prepare_manifest()
    from orchestration import definitions as d

    instance = _instance()
    quiet = {"loggers": {"console": {"config": {"log_level": os.environ.get("GENEPOOL_LOG_LEVEL", "WARNING")}}}}
    if not dg.materialize(d.registry_assets, instance=instance, resources=d.default_resources(), run_config=quiet,
                          tags={"genepool/trigger": "cli"}).success:
        raise SystemExit("materialising prompt_registry/benchmark failed; see `dagster dev` for the run")
    key = _partition_to_run(instance, agent, generation, queued_is_taken=True)
    run_id = str(uuid.uuid4())
    workspace = Path(__file__).resolve().parents[1] / "workspace.yaml"
    cmd = [str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", str(workspace),
           "-j", "generation_job", "--run-id", run_id, "--tags", json.dumps(run_tags(key, "cli", rerun=rerun))]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workspace.parent, env=os.environ.copy())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"submitting {key} failed: {tail[0]}")
    print(f"submitted generation {key} as run {run_id} (queued; `genepool worker` machines run it)", flush=True)
    out = {"partition_key": key, "run_id": run_id}
    if wait:
        deadline = time.monotonic() + timeout_s
        while True:
            run = instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"run {run_id} of {key} did not finish within {timeout_s:.0f}s")
            time.sleep(2)
        out["status"] = run.status.value
        print(f"run {run_id} of {key}: {run.status.value}", flush=True)
        if run.status != dg.DagsterRunStatus.SUCCESS:
            raise SystemExit(f"generation {key} ended {run.status.value} (run {run_id})")
    return out


def _fmt(v) -> tuple[str, str, str]:  # genepool.steps.Scores or None
    if v is None:
        return ("-", "-", "-")
    return (f"{v.success:.1%}", f"{v.avg_tokens:.0f}", f"{v.avg_latency_ms:.0f}")


def print_summary(out: dict, db, wall: float) -> None:
    from genepool.registry import PromptRegistry
    from genepool.store import generation_spend

    reg = PromptRegistry(db)
    key = out["partition_key"]
    front, promoted = out["front"], out["promoted"]
    print()
    print(f"genepool · generation {key} · run {out['run_id']}")
    print("=" * 96)
    print("Failure modes of the production prompt (train sample):")
    for c in out["clusters"].clusters[:6]:
        print(f"  {c.share:>5.0%}  {c.name}")
    pop = out["population"].children
    print(f"Children: {sum(c.accepted for c in pop)} accepted, "
          f"{sum(not c.accepted for c in pop)} rejected "
          f"({', '.join(sorted({c.operator for c in pop}))})")
    print()
    hdr = (
        f"{'prompt':<22}{'version':<9}{'role':<14}{'screen succ':>12}{'val succ':>10}"
        f"{'tokens/item':>12}{'latency ms':>11}"
    )
    print(hdr)
    print("-" * len(hdr))
    pv = _fmt(front.baseline_validation)
    ps = _fmt(front.baseline_screen)
    print(f"{front.production_id:<22}{reg.get(front.production_id).version:<9}{'production':<14}"
          f"{ps[0]:>12}{pv[0]:>10}{pv[1]:>12}{pv[2]:>11}")
    for m in front.members:
        if m.prompt_id == front.production_id:
            continue
        role = "front" if m.on_front else "survivor"
        if any(p.prompt_id == m.prompt_id for p in promoted.promoted):
            role += "+cand"
        v = _fmt(m.validation)
        s = _fmt(m.screen)
        print(f"{m.prompt_id:<22}{m.version:<9}{role:<14}{s[0]:>12}{v[0]:>10}"
              f"{(v[1] if m.validation else s[1]):>12}{(v[2] if m.validation else s[2]):>11}")
    print()
    if promoted.promoted:
        best = promoted.promoted[0]
        print(f"Proposed for promotion (state 'candidate'): {', '.join(p.prompt_id for p in promoted.promoted)}")
        rec = reg.get(best.prompt_id)
        print(f"  best: {rec.id} v{rec.version} via {rec.operator}, parents {', '.join(rec.parent_ids)}")
        g = rec.genome
        shots = (f"a pool of {len(g.examples)} examples, the {g.example_select} nearest the input as turns"
                 if g.example_select else f"{len(g.examples)} few-shot turns ({g.example_format})")
        print(f"        {len(g.instructions)} rules, {shots}, "
              f"max_tokens={g.params.max_tokens}, stop={list(g.params.stop)}")
    else:
        print("No front member beat production on validation this generation (nothing proposed).")
    if promoted.test:
        print("Held-out test split (never used for selection):")
        for pid, t in promoted.test.items():
            print(f"  {pid}: success {t.success:.1%} on {t.items} items, {t.avg_tokens:.0f} tokens/item")
    spend = generation_spend(db, key)
    from orchestration.definitions import optimizer_from_env

    print(f"Budget: {spend.rollouts} of {optimizer_from_env().max_rollouts} rollouts"
          f"; new LLM calls (every run of {key}): {spend.llm_calls}; wall time {wall:.0f} s; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print()
    if out.get("metrics_ok") is False:
        print("The dbt metrics refresh failed: open its run with `make dev` (the generation itself is stored).")
    print("Next:")
    if promoted.promoted:
        print(f"  genepool approve {promoted.promoted[0].prompt_id} --by YOUR_NAME --reason '...'")
    print("  genepool web                      # approval page: scores, diff, Pareto plot, Approve/Reject")
    print("  make dev                          # dagster dev: asset graph, runs, metadata, sensors")
    print("  make demo                         # the next generation")


def cmd_doctor(args) -> None:
    from genepool.doctor import run_doctor

    report = run_doctor()
    print(report.line, file=sys.stdout if report.ok else sys.stderr)
    if not report.ok:
        raise SystemExit(1)


def cmd_demo(args) -> None:
    t0 = time.perf_counter()
    if getattr(args, "cmd", None) == "demo":  # first step: one completion in a child process (a crash -> the fix)
        cmd_doctor(args)
    print(f"genepool demo: data folder {data_dir()}")
    db = _db(start=True)
    print(f"PostgreSQL ready ({'external' if os.environ.get('GENEPOOL_DATABASE_URL') else 'embedded'}); "
          f"Dagster home {dagster_home()}")
    out = run_generation_in_dagster(args.agent, args.generation, metrics=not args.no_metrics,
                                    rerun=getattr(args, "rerun", False))
    print_summary(out, db, time.perf_counter() - t0)


def cmd_run(args) -> None:
    from genepool.agents import get_agent

    get_agent(args.agent)  # a broken or unknown agent: one line naming the file, line and field, before any work
    if getattr(args, "submit", False):
        submit_generation(args.agent, args.generation, wait=args.wait, rerun=args.rerun)
        return
    cmd_demo(args)


def cmd_worker(args) -> None:
    """A Celery run worker for the CeleryRunLauncher (the machine needs GENEPOOL_DATABASE_URL and the broker)."""
    from orchestration.queue import celery_settings, require_shared_database

    require_shared_database("genepool worker")
    celery_settings()  # one clear line if the broker or backend is missing
    celery = Path(sys.executable).with_name("celery")
    # one run at a time, in the worker's main process: a run's multiprocess executor (e.g. the dbt metrics job)
    # may not start children from a daemonic prefork pool process. Start more workers for more runs at once.
    argv = [str(celery), "-A", "orchestration.worker", "worker", "--pool", "solo", "--prefetch-multiplier=1",
            "-Q", ",".join(["dagster", *args.queue]), "-n", args.name, "--loglevel", args.loglevel]
    os.chdir(Path(__file__).resolve().parents[1])
    os.execv(argv[0], argv)


def cmd_prompts(args) -> None:
    from genepool.registry import PromptRegistry

    for p in PromptRegistry(_db()).list(args.agent, args.state):
        print(f"{p.id}  {p.agent_type:<14} v{p.version:<8} {p.state or '-':<13} gen {p.generation:<3} {p.operator}")


def cmd_lineage(args) -> None:
    from genepool.registry import PromptRegistry

    reg = PromptRegistry(_db())
    chain = reg.lineage(args.prompt_id)
    decided = reg.decisions([p.id for p in chain])
    for p in chain:
        said = "; ".join(f"{_VERB[e['label']]} by {e['actor']}: {json.dumps(e['reason'][:120], ensure_ascii=False)}"
                         for e in decided[p.id])
        print(f"{p.id}  v{p.version:<8} {p.state or '-':<13} {p.operator:<20} parents: {', '.join(p.parent_ids) or '-'}"
              f"  experiment: {p.experiment_id or '-'}" + (f"  | {said}" if said else ""))


_VERB = {"production": "approved", "rejected": "rejected", "archived": "archived"}


def cmd_show(args) -> None:
    from genepool.registry import PromptRegistry

    reg = PromptRegistry(_db())
    p = reg.get(args.prompt_id) if args.prompt_id else reg.get_prompt(args.agent, args.label)
    decided = reg.decisions([p.id])[p.id]
    approval = next((e for e in reversed(decided) if e["label"] == "production"), None)
    print(json.dumps({"id": p.id, "agent_type": p.agent_type, "version": p.version, "state": p.state,
                      "content": p.content, "genome": p.genome.to_dict(), "parents": p.parent_ids,
                      "experiment": p.experiment_id,
                      "approved_by": approval["actor"] if approval else None,
                      "approval_reason": approval["reason"] if approval else None,
                      "decisions": [{"label": e["label"], "actor": e["actor"], "reason": e["reason"],
                                     "at": e["created_at"].isoformat()} for e in decided]}, indent=2))


def cmd_approve(args) -> None:
    from genepool import approval
    from resources.langfuse import LangfuseResource

    lf = LangfuseResource()
    db = _db()
    rec = approval.approve(db, args.prompt_id, args.by, args.reason, langfuse=lf if lf.enabled else None)
    print(f"approved: {rec.id} ({rec.agent_type} v{rec.version}) is now in production")
    _record_registry_decision(db, f"approve {rec.id} ({rec.agent_type} v{rec.version}) by {args.by}: {args.reason}")


def cmd_reject(args) -> None:
    from genepool import approval

    db = _db()
    rec = approval.reject(db, args.prompt_id, args.by, args.reason)
    print(f"rejected: {rec.id} ({rec.agent_type} v{rec.version})")
    _record_registry_decision(db, f"reject {rec.id} ({rec.agent_type} v{rec.version}) by {args.by}: {args.reason}")


def _record_registry_decision(db, text: str) -> None:
    """A runless materialisation of prompt_registry, so Dagster's registry page shows the decision at once
    (production prompt, candidates, lineage with approver and reason). Best effort: the decision is stored."""
    try:
        import dagster as dg

        from assets.registry import registry_metadata

        meta = registry_metadata(db)
        meta["last_decision"] = dg.MetadataValue.text(text)
        _instance().report_runless_asset_event(dg.AssetMaterialization(asset_key="prompt_registry", metadata=meta))
    except Exception as exc:  # e.g. Dagster's database unreachable: say so, keep the decision
        print(f"note: decision stored; Dagster's prompt_registry page not updated ({type(exc).__name__}: {exc})",
              file=sys.stderr)


def cmd_web(args) -> None:
    from genepool.web.app import serve

    serve(host="127.0.0.1", port=args.port)


def cmd_dagster_home(args) -> None:
    print(write_dagster_yaml())


def cmd_dbt_prepare(args) -> None:
    from genepool.dbt_project import prepare_manifest

    print(prepare_manifest(force=args.force))


def cmd_db(args) -> None:
    from genepool.db import redact, resolve_urls, stop_embedded

    if args.action == "url":
        print(redact(resolve_urls().genepool))
    elif args.action == "start":
        print(f"PostgreSQL running: {redact(resolve_urls(start=True).genepool)}")
    elif args.action == "stop":
        print("stopped" if stop_embedded() else "not running")


def _dagster_storage_error(exc: BaseException) -> str | None:
    """What PostgreSQL said, when Dagster's run/event storage lost its database (SQLAlchemy/psycopg2 errors,
    raised by Dagster itself: no genepool code is on that path); None for any other error."""
    import sqlalchemy.exc

    seen: set[int] = set()
    found = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        if isinstance(exc, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            name == "DagsterPostgresException"
        ):
            found = exc  # keep the deepest: it carries PostgreSQL's own words
        exc = exc.__cause__ or exc.__context__
    if found is None:
        return None
    text = str(getattr(found, "orig", None) or found)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(found).__name__)
    from genepool.db import redact

    return redact(first)[:200]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="genepool", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, fn in (("demo", cmd_demo), ("run", cmd_run)):
        s = sub.add_parser(name, help="run the next (or a given) generation of an agent and print a summary")
        s.add_argument("--agent", default=DEFAULT_AGENT)
        s.add_argument("--generation", type=int)
        s.add_argument("--no-metrics", action="store_true", help="skip the dbt metrics refresh")
        s.add_argument("--rerun", action="store_true",
                       help="re-run a closed generation on purpose (its promotion ran or a later one exists)")
        s.add_argument("--verbose", action="store_true",
                       help="show Dagster's step logs, dbt output and library warnings on the console")
        if name == "run":
            s.add_argument("--submit", action="store_true",
                           help="submit to the run queue (daemon + run launcher) instead of running here")
            s.add_argument("--wait", action="store_true", help="with --submit: wait for the run and fail if it fails")
        s.set_defaults(fn=fn)
    s = sub.add_parser("worker", help="a Celery run worker (GENEPOOL_RUN_LAUNCHER=celery; see README)")
    s.add_argument("--name", default="genepool@%h", help="Celery node name (default genepool@HOSTNAME)")
    s.add_argument("--queue", action="append", default=[], help="an extra queue to listen on (besides 'dagster')")
    s.add_argument("--loglevel", default="INFO")
    s.set_defaults(fn=cmd_worker)
    s = sub.add_parser("doctor", help="one completion of the configured model in a child process; a crash -> the fix")
    s.set_defaults(fn=cmd_doctor)
    s = sub.add_parser("prompts", help="list prompts with their lifecycle state")
    s.add_argument("--agent")
    s.add_argument("--state")
    s.set_defaults(fn=cmd_prompts)
    s = sub.add_parser("lineage", help="a prompt and its ancestors")
    s.add_argument("prompt_id")
    s.set_defaults(fn=cmd_lineage)
    s = sub.add_parser("show", help="one prompt (by id, or an agent's label)")
    s.add_argument("prompt_id", nargs="?")
    s.add_argument("--agent", default=DEFAULT_AGENT)
    s.add_argument("--label", default="prod")
    s.set_defaults(fn=cmd_show)
    for name, fn in (("approve", cmd_approve), ("reject", cmd_reject)):
        s = sub.add_parser(name, help=f"{name} a candidate prompt (a person's decision)")
        s.add_argument("prompt_id")
        s.add_argument("--by", required=True, help="your name")
        s.add_argument("--reason", required=True)
        s.set_defaults(fn=fn)
    s = sub.add_parser("web", help="serve the approval page on 127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.set_defaults(fn=cmd_web)
    s = sub.add_parser("dagster-home", help="write DAGSTER_HOME/dagster.yaml (PostgreSQL storage)")
    s.set_defaults(fn=cmd_dagster_home)
    s = sub.add_parser("dbt-prepare", help="build dbt_metrics/target/manifest.json (the code location needs it)")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_dbt_prepare)
    s = sub.add_parser("db", help="the embedded PostgreSQL")
    s.add_argument("action", choices=["url", "start", "stop"])
    s.set_defaults(fn=cmd_db)
    args = p.parse_args(argv)
    if getattr(args, "verbose", False):
        os.environ["GENEPOOL_LOG_LEVEL"] = "INFO"
    elif os.environ.get("GENEPOOL_LOG_LEVEL", "WARNING").upper() == "WARNING":
        # the console shows progress and the summary; Dagster's preview/deprecation warnings and dbt's chatter
        # stay in the run's page (`make dev`) unless --verbose
        import logging
        import warnings

        warnings.filterwarnings("ignore", module=r"dagster(_\w+)?(\.|$)")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if args.cmd in ("demo", "run"):  # Dagster's own warning classes (they point at the caller's module)
            from dagster._utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

            for category in (BetaWarning, PreviewWarning, SupersessionWarning):
                warnings.filterwarnings("ignore", category=category)
        for name in ("dagster", "dagster.builtin", "dbt", "dagster_dbt"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # dagster_postgres logs each retry of a lost storage connection on the root logger (4 lines apiece); the
        # command ends with one genepool: line if the database stays gone
        logging.getLogger().addFilter(
            lambda r: not (r.name == "root" and str(r.msg).startswith("Retrying failed database")))
    try:
        args.fn(args)
    except (LookupError, ValueError) as exc:  # registry/approval/config errors carry the fix in their message
        print(f"genepool: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # PostgreSQL down or gone mid-command: one line (URL redacted, how to start it)
        import psycopg

        from genepool.db import DatabaseUnavailable

        if isinstance(exc, DatabaseUnavailable):
            print(f"genepool: {exc}", file=sys.stderr)
        elif isinstance(exc, psycopg.OperationalError):
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            print(f"genepool: lost the connection to PostgreSQL ({first[:200]}); `genepool db start` starts the "
                  "embedded server, or check GENEPOOL_DATABASE_URL, then run the command again", file=sys.stderr)
        elif (said := _dagster_storage_error(exc)) is not None:
            print(f"genepool: lost the connection to Dagster's PostgreSQL storage ({said}; configured in "
                  f"{dagster_home() / 'dagster.yaml'}); `genepool db start` starts the embedded server, or check "
                  "GENEPOOL_DATABASE_URL / GENEPOOL_DAGSTER_DATABASE_URL, then run the command again (answered LLM "
                  "calls are cached)", file=sys.stderr)
        else:
            raise
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
