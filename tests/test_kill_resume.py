"""Fault matrix 7.3a: a real generation process SIGKILLed during experiments, then the same command again.

The child (tests/generation_child.py) runs ``genepool.steps.run_generation`` on the test database with a
TEST DOUBLE model; the reference is the same generation run cleanly in a fresh database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from doubles import RuleFollowingFakeModel
from generation_child import CONFIG

from genepool import store
from genepool.db import Database, migrate
from genepool.llm import LLMClient
from genepool.steps import Generation, run_generation

CHILD = Path(__file__).resolve().parent / "generation_child.py"
ROOT = CHILD.parent.parent
KEY = "support-desk/g0001"

ROWS = {  # what a generation writes, by its natural key and content
    "traces": "SELECT id, prompt_id, item_id, output, success FROM genepool.traces WHERE partition_key = %s",
    "candidates": "SELECT position, prompt_id, operator, status, reason FROM genepool.candidates"
                  " WHERE experiment_id = %s",
    "experiment_results": "SELECT prompt_id, item_id, role, success, output, prompt_tokens FROM"
                          " genepool.experiment_results WHERE experiment_id = %s",
    "front_members": "SELECT prompt_id, rank, on_front, survivor, feasible, success_rate FROM genepool.front_members"
                     " WHERE experiment_id = %s",
    "prompt_events": "SELECT e.prompt_id, e.label FROM genepool.prompt_events e JOIN genepool.prompts p"
                     " ON p.id = e.prompt_id WHERE p.experiment_id = %s",
    "spend": "SELECT step, rollouts, tokens FROM genepool.generation_spend WHERE experiment_id = %s",
}


def _rows(db: Database) -> dict[str, list[tuple]]:
    return {name: sorted(tuple(r.values()) for r in db.fetchall(sql, (KEY,))) for name, sql in ROWS.items()}


def answered_so_far(db: Database) -> tuple[set[str], int]:
    """(request hashes the model answered for KEY, the last llm_calls id) before a fault."""
    answered = {r["request_hash"] for r in db.fetchall(
        "SELECT request_hash FROM genepool.llm_calls WHERE partition_key = %s AND NOT cached", (KEY,))}
    return answered, db.fetchone("SELECT max(id) AS id FROM genepool.llm_calls")["id"]


def check_resumed_like_a_clean_run(db: Database, answered: set[str], last: int, clean_url: str) -> dict:
    """After the resume: no answered request asked again, rows equal a clean run of the same generation in
    ``clean_url`` (0 lost, duplicated or stale). Returns the probe's figures."""
    new = db.fetchall("SELECT request_hash, cached FROM genepool.llm_calls WHERE id > %s", (last,))
    repeated = [r for r in new if not r["cached"] and r["request_hash"] in answered]
    assert new and not repeated  # no answered request was asked of the model again
    migrate(clean_url)
    clean_db = Database(clean_url)
    run_generation(Generation(clean_db, LLMClient(RuleFollowingFakeModel(), clean_db), "support-desk", 1, CONFIG))
    got, want = _rows(db), _rows(clean_db)
    clean_db.close()
    duplicated = sum(max(0, len(got[k]) - len(set(got[k]))) for k in got)
    lost = sum(len(set(want[k]) - set(got[k])) for k in want)
    stale = sum(len(set(got[k]) - set(want[k])) for k in got)
    assert (duplicated, lost, stale) == (0, 0, 0)
    assert got == want  # the resumed generation is row for row the clean one
    return {"rows_lost": lost, "rows_duplicated": duplicated, "new_llm_calls_on_resume": len(repeated),
            "new_calls_after_resume": sum(not r["cached"] for r in new)}


def wait_until_into_experiments(db: Database, proc: subprocess.Popen, calls: int = 8, timeout_s: float = 120) -> None:
    """Block until the child generation has made ``calls`` experiment calls (well into that step), failing if it
    ends first or takes longer than ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        n = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE partition_key = %s"
                        " AND purpose = 'experiment'", (KEY,))["n"]
        if n >= calls:
            return
        assert proc.poll() is None, f"the child ended before the experiments: {proc.communicate()}"
        assert time.monotonic() < deadline, "the child never reached the experiments step"
        time.sleep(0.02)


def _child(db_url: str, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CHILD), db_url, "support-desk", "1", str(delay)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.probe
def test_generation_killed_during_experiments_resumes_from_the_cache(db, db_url, fresh_database_url, probe):
    proc = _child(db_url, 0.05)
    wait_until_into_experiments(db, proc)  # then kill it
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not db.fetchall("SELECT 1 FROM genepool.front_members WHERE experiment_id = %s", (KEY,))  # unfinished
    answered, last = answered_so_far(db)

    again = _child(db_url, 0.0)  # the same command again (the killed run's lock went with its connection)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    figures = check_resumed_like_a_clean_run(db, answered, last, fresh_database_url("kill_clean"))
    spent = store.generation_spend(db, KEY).llm_calls
    paid = db.fetchone("SELECT count(*) AS n FROM genepool.llm_calls WHERE partition_key = %s AND NOT cached",
                       (KEY,))["n"]
    assert spent == paid  # the killed run's calls count in the generation's spend, none lost
    probe("held: SIGKILL during experiments, same command again finished from the cache, rows equal a clean run",
          calls_before_kill=len(answered), **figures)
