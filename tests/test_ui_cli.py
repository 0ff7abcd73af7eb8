"""`genepool run` runs the code location's generation_job (a named run, not __ephemeral_asset_job__),
shows its progress (plain lines when stdout is not a terminal, a rich bar when it is, forced here with
GENEPOOL_PROGRESS=bar), and `genepool approve` records a prompt_registry materialisation.

Real CLI process, real PostgreSQL, real Dagster; the task model is a STUB OpenAI-compatible server on
127.0.0.1 (tests/stub_llm_server.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from genepool.registry import PromptRegistry
from tests.stub_llm_server import StubLLMServer
from tests.test_ui_graphql import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)
def test_cli_run_is_the_named_generation_job_with_progress(db, db_url, fresh_database_url, tmp_path):
    dagster_url = fresh_database_url("dagcli")
    home = tmp_path / "dagster_home"
    with StubLLMServer() as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "GENEPOOL_"))}
        env.update({
            "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), "GENEPOOL_DATABASE_URL": db_url,
            "GENEPOOL_DAGSTER_DATABASE_URL": dagster_url, "GENEPOOL_DATA_DIR": str(tmp_path / "data"),
            "OPENAI_API_KEY": "stub-key", "GENEPOOL_OPTIMIZER": json.dumps(TINY),
            **{f"{p}_{k}": v for p in ("GENEPOOL_LLM", "GENEPOOL_REFLECTION")
               for k, v in (("PROVIDER", "openai_compatible"), ("BASE_URL", stub.base_url), ("MODEL", "stub"))},
        })
        cli = [sys.executable, "-m", "orchestration.cli"]
        run = subprocess.run([*cli, "run", "--agent", "support-desk"], cwd=str(ROOT), env=env,
                             capture_output=True, text=True, timeout=800)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "running generation support-desk/g0001" in out
    assert "refreshing the dbt metrics" in out
    # quiet console: no Dagster warnings, step logs or dbt chatter unless --verbose
    for noise in ("PreviewWarning", "BetaWarning", "UserWarning", "STEP_START", "DeprecationWarning",
                  "Running with dbt", " PASS "):
        assert noise not in run.stdout + run.stderr, noise
    # stdout is a pipe here: plain progress lines, the last one the final state of the generation
    progress = [line for line in out.splitlines() if line.startswith("  [steps ")]
    assert progress and "\x1b[" not in out, out[-2000:]
    final = re.search(r"\[steps (\d)/6\] .* candidates (\d+)/(\d+) · rollouts (\d+)/12 · success so far (\d+)% · "
                      r"(\d+) LLM calls", progress[-1])
    assert final, progress
    steps, cand, n_cand, rollouts = (int(final.group(i)) for i in range(1, 5))
    assert steps == 6 and 1 <= cand == n_cand and 0 < rollouts <= 12, progress[-1]
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        jobs = {r.job_name for r in instance.get_runs()}
        assert "generation_job" in jobs and "registry_job" in jobs
        assert not any(j.startswith("__") for j in jobs), jobs
        [gen] = instance.get_runs(dg.RunsFilter(job_name="generation_job"))
        assert gen.status == dg.DagsterRunStatus.SUCCESS
        # the library's per-candidate progress is in the run's log view (python_logs: managed genepool loggers)
        logs = [r.event_log_entry.user_message for r in instance.get_records_for_run(gen.run_id, limit=5000).records
                if r.event_log_entry.dagster_event is None]
        assert any("support-desk/g0001: candidate 1 of" in m and "rollouts left" in m for m in logs), logs[-20:]
        assert (gen.tags["dagster/partition"], gen.tags["genepool/trigger"], gen.tags["genepool/agent_type"]) == (
            "support-desk|g0001", "cli", "support-desk")

        # the same command on a terminal: a rich progress display (bars redrawn in place), no plain lines
        with StubLLMServer() as stub:
            bar_env = {**env, "GENEPOOL_PROGRESS": "bar",
                       **{f"{p}_BASE_URL": stub.base_url for p in ("GENEPOOL_LLM", "GENEPOOL_REFLECTION")}}
            bar = subprocess.run([*cli, "run", "--agent", "support-desk", "--no-metrics"], cwd=str(ROOT),
                                 env=bar_env, capture_output=True, text=True, timeout=800)
        assert bar.returncode == 0, bar.stdout[-3000:] + bar.stderr[-3000:]
        assert "running generation support-desk/g0002" in bar.stdout
        assert "\x1b[" in bar.stdout and "━" in bar.stdout, bar.stdout[-2000:]  # ANSI redraws, bar glyphs
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", bar.stdout)
        assert re.search(r"steps\s+━+\s+6/6", plain), plain[-2000:]
        assert re.search(r"candidates\s+━+\s+(\d+)/\1\s+success so far \d+%", plain), plain[-2000:]
        assert re.search(r"rollouts\s+[━╸╺ ]+\s+\d+/12\s+\d+ LLM calls", plain), plain[-2000:]
        assert not [line for line in bar.stdout.splitlines() if line.startswith("  [steps ")]

        reg = PromptRegistry(db)
        prod = reg.get_prompt("support-desk")
        # a candidate a person will approve (made here: the stub's echo answers need not beat production)
        child = reg.register("support-desk", prod.genome.with_(instructions=(*prod.genome.instructions, "Be brief.")),
                             parent_ids=[prod.id], generation=1, operator="add_instruction")
        reg.label(child.id, "candidate", "genepool", "test")
        target = child.id
        ok = subprocess.run([*cli, "approve", target, "--by", "alice", "--reason", "cheaper"], cwd=str(ROOT),
                            env=env, capture_output=True, text=True, timeout=300)
        assert ok.returncode == 0, ok.stderr[-2000:]
        mat = instance.get_latest_materialization_event(dg.AssetKey("prompt_registry")).asset_materialization
        assert mat.metadata["last_decision"].value.startswith(f"approve {target}")
        assert f"| support-desk | {target} |" in mat.metadata["production"].value
        assert reg.get_prompt("support-desk").id == target
    finally:
        instance.dispose()
