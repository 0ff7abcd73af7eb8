"""Budgets per call, the partition lock and honest re-runs of a generation, on a real PostgreSQL with TEST
DOUBLE models (tests/doubles.py): issue 7, points 3d, 3g and 4."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace

import pytest
from doubles import NegativeTokensFakeModel, RuleFollowingFakeModel

from genepool import store
from genepool.core.budget import Budget, BudgetExceeded
from genepool.db import Database
from genepool.llm import CostTable, LLMClient, RawCompletion
from genepool.settings import GenerationConfig
from genepool.steps import (
    FingerprintMismatch,
    Generation,
    collect_traces,
    find_failure_clusters,
    mutate_population,
    run_generation,
)
from genepool.store import PartitionBusy

SMALL = GenerationConfig(
    seed=1234, trace_items=15, population_size=6, n_targets=6, n_controls=4, validate_top=2,
    validation_items=10, test_items=5, max_rollouts=200,
)
PRICE = CostTable({RuleFollowingFakeModel.model: (1000.0, 1000.0)})  # $0.001 per token: every call costs


def _gen(db, provider, agent="support-desk", generation=1, config=SMALL, cost=None, **kw) -> Generation:
    return Generation(db, LLMClient(provider, db, cost), agent, generation, config, **kw)


def _count(db, table: str, where: str = "TRUE", params: tuple = ()) -> int:
    return db.fetchone(f"SELECT count(*) AS n FROM genepool.{table} WHERE {where}", params)["n"]


def _llm_usd(db, key: str) -> float:
    return float(db.fetchone("SELECT coalesce(sum(cost_usd), 0) AS u FROM genepool.llm_calls"
                             " WHERE partition_key = %s", (key,))["u"])


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("max_usd", math.nan, "finite"), ("max_usd_per_day", math.inf, "finite"), ("max_rollouts", -1, ">= 0"),
    ("max_report_rollouts", -5, ">= 0"), ("max_tokens", 2.5, "whole number"), ("report_test", 1, "true or false"),
])
def test_settings_refuse_nan_infinite_negative_and_wrong_types(field, value, message):
    with pytest.raises(ValueError, match=f"GenerationConfig.{field}=.*{message}"):
        GenerationConfig(**{field: value})
    with pytest.raises(ValueError, match="finite number >= 0"):
        Budget(max_usd=math.nan)


def test_unknown_optimizer_keys_are_refused_with_the_valid_keys(monkeypatch):
    from orchestration.environment import optimizer_from_env

    monkeypatch.setenv("GENEPOOL_OPTIMIZER", json.dumps({"max_rolouts": 5}))
    with pytest.raises(ValueError, match=r"unknown keys \['max_rolouts'\]; valid keys: .*max_rollouts"):
        optimizer_from_env()
    monkeypatch.setenv("GENEPOOL_OPTIMIZER", '{"max_usd": NaN}')
    with pytest.raises(ValueError, match="max_usd=nan must be a finite number"):
        optimizer_from_env()
    monkeypatch.setenv("GENEPOOL_OPTIMIZER", '{"max_usd": 1.5, "max_report_rollouts": 40}')
    assert optimizer_from_env().config().max_report_rollouts == 40


def test_creating_a_generation_writes_nothing(db):
    gen = _gen(db, RuleFollowingFakeModel())
    assert [_count(db, t) for t in ("agents", "experiments", "prompts", "generation_spend")] == [0, 0, 0, 0]
    with pytest.raises(RuntimeError, match="not registered: run its first step"):
        gen.verify()
    collect_traces(gen)  # the first step registers the generation
    assert _count(db, "experiments", "id = %s AND fingerprint = %s", (gen.key, gen.fingerprint())) == 1


# ---------------------------------------------------------------------------------------------
# budgets, counted and checked per call (7.3g)
# ---------------------------------------------------------------------------------------------
def test_usd_cap_counts_every_call_and_is_never_overshot(db, fresh_database_url, probe):
    from genepool.db import migrate

    url = fresh_database_url("usd_probe")
    migrate(url)
    probe_db = Database(url)
    traces_usd = _llm_usd(probe_db, collect_traces(_gen(probe_db, RuleFollowingFakeModel(), cost=PRICE)).partition_key)
    assert traces_usd > 0
    cap = round(traces_usd * 2.5, 6)
    gen = _gen(db, RuleFollowingFakeModel(), config=replace(SMALL, max_usd=cap), cost=PRICE)
    out = run_generation(gen)
    spent = _llm_usd(db, gen.key)
    spend = store.generation_spend(db, gen.key)
    assert traces_usd < spent <= cap
    assert spend.usd == pytest.approx(spent)  # every call's money is in generation_spend
    assert out.results.skipped_for_budget  # whole candidates were left out instead of overshooting
    probe("held: max_usd checked before each call with its upper-bound cost; spend recorded per call",
          spent_usd=spent, cap_usd=cap)


def test_token_cap_counts_every_call_and_is_never_overshot(db):
    cap = 4000
    gen = _gen(db, RuleFollowingFakeModel(), config=replace(SMALL, max_tokens=cap))
    out = run_generation(gen)
    used = db.fetchone("SELECT sum(prompt_tokens + completion_tokens) AS t FROM genepool.llm_calls"
                       " WHERE partition_key = %s", (gen.key,))["t"]
    assert 0 < used <= cap and store.generation_spend(db, gen.key).tokens == used
    assert out.results.skipped_for_budget or out.front.baseline_validation is None


class ReflectionFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE of a reflection model: answers every request with two instruction lists."""

    name = "fake_reflection"
    model = "reflection-fake-v1"

    def complete(self, messages, params) -> RawCompletion:
        self.calls += 1
        text = "PROMPT 1:\n- Answer with the label only.\nPROMPT 2:\n- Reply with only the number."
        return RawCompletion(text=text, prompt_tokens=200, completion_tokens=20, latency_ms=5.0)


def test_reflection_calls_count_against_the_generation_budget(db):
    reflector = ReflectionFakeModel()
    cfg = replace(SMALL, n_reflect=2)
    gen = _gen(db, RuleFollowingFakeModel(), config=cfg, reflection_llm=LLMClient(reflector, db))
    traces = collect_traces(gen)
    mutate_population(gen, traces, find_failure_clusters(traces))
    assert reflector.calls == 1
    pop_spend = store.generation_spend(db, gen.key).step("population")
    assert (pop_spend.rollouts, pop_spend.tokens, pop_spend.llm_calls) == (1, 220, 1)

    # no rollout left after the traces: the reflection call is refused before it is made, breeding goes on
    reflector2 = ReflectionFakeModel()
    tight = replace(cfg, max_rollouts=cfg.trace_items)
    gen2 = _gen(db, RuleFollowingFakeModel(), generation=2, config=tight, reflection_llm=LLMClient(reflector2, db))
    traces2 = collect_traces(gen2)
    pop2 = mutate_population(gen2, traces2, find_failure_clusters(traces2))
    assert reflector2.calls == 0 and any("budget exceeded: max_rollouts" in n for n in pop2.notes)
    assert pop2.children and store.generation_spend(db, gen2.key).rollouts == cfg.trace_items


def test_test_report_has_its_own_rollout_cap_and_counts_its_tokens(db):
    gen = _gen(db, RuleFollowingFakeModel(), config=replace(SMALL, max_report_rollouts=SMALL.test_items - 1))
    out = run_generation(gen)
    assert out.promotion.test == {} and out.front.production_id in out.promotion.report_skipped
    assert _count(db, "experiment_results", "experiment_id = %s AND role = 'test'", (gen.key,)) == 0

    gen2 = _gen(db, RuleFollowingFakeModel(), generation=2, config=replace(SMALL, max_report_rollouts=50))
    out2 = run_generation(gen2)
    spend = store.generation_spend(db, gen2.key)
    report = spend.step(store.REPORT_STEP)
    assert out2.front.production_id in out2.promotion.test
    assert report.rollouts == sum(t.items for t in out2.promotion.test.values()) > 0
    assert report.tokens > 0 and spend.tokens == sum(s.tokens for s in spend.steps.values())
    assert spend.rollouts == sum(s.rollouts for k, s in spend.steps.items() if k != store.REPORT_STEP)


def test_spend_rows_add_up_across_concurrent_writers(db, db_url):
    db.execute("INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES ('x/g0001','x',1,1)")

    def writer():
        mine = Database(db_url)
        for _ in range(40):
            store.add_spend(mine, "x/g0001", "experiments", 1, 10, 0.5, 1)
        mine.close()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = db.fetchone("SELECT rollouts, tokens, usd, llm_calls FROM genepool.generation_spend"
                      " WHERE experiment_id = 'x/g0001' AND step = 'experiments'")
    assert row == {"rollouts": 160, "tokens": 1600, "usd": 80.0, "llm_calls": 160}  # no write lost


def test_daily_usd_cap_holds_across_concurrent_runs(db, db_url, probe):
    cap = 0.5
    cfg = replace(SMALL, max_usd_per_day=cap)
    errors: list[BaseException] = []

    def run(agent: str) -> None:
        mine = Database(db_url)
        try:
            run_generation(_gen(mine, RuleFollowingFakeModel(), agent=agent, config=cfg, cost=PRICE))
        except BudgetExceeded as exc:
            errors.append(exc)
        finally:
            mine.close()

    threads = [threading.Thread(target=run, args=(a,)) for a in ("support-desk", "critic")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    today = store.spent_today(db)
    assert errors and all(e.cap == "max_usd_per_day" for e in errors)
    assert 0 < today <= cap
    assert _count(db, "usd_reservations") == 0  # every reservation was released
    probe("held: two concurrent runs stayed under the daily USD cap (reserved per call)", spent_usd=today, cap_usd=cap)


# ---------------------------------------------------------------------------------------------
# the partition lock (7.3d, 7.3e)
# ---------------------------------------------------------------------------------------------
class GatedFakeModel(RuleFollowingFakeModel):
    """TEST DOUBLE: a RuleFollowingFakeModel whose first call waits until the test opens the gate."""

    def __init__(self):
        super().__init__()
        self.started, self.gate = threading.Event(), threading.Event()

    def complete(self, messages, params):
        self.started.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().complete(messages, params)


def test_second_run_of_a_partition_refuses_at_once_and_spends_nothing(db, db_url, probe):
    first_model = GatedFakeModel()
    done: list = []
    first = threading.Thread(target=lambda: done.append(run_generation(_gen(Database(db_url), first_model))))
    first.start()
    try:
        assert first_model.started.wait(30)
        second_model = RuleFollowingFakeModel()
        with pytest.raises(PartitionBusy, match=r"partition support-desk/g0001 is already being run by genepool "
                                                r"support-desk/g0001 .*pid \d+.*refused before making any LLM call"):
            run_generation(_gen(db, second_model))
        assert second_model.calls == 0
    finally:
        first_model.gate.set()
        first.join(120)
    assert done, "the first run did not finish"
    calls = _count(db, "llm_calls", "partition_key = 'support-desk/g0001' AND NOT cached")
    assert calls == first_model.calls  # nothing was paid twice
    probe("held: a second run of a running partition refused at once (advisory lock), 0 LLM calls",
          new_llm_calls_on_resume=0)


def test_two_agent_types_run_at_once_and_both_finish(db, db_url, probe):
    out: dict = {}

    def run(agent):
        mine = Database(db_url)
        out[agent] = run_generation(_gen(mine, RuleFollowingFakeModel(), agent=agent))
        mine.close()

    threads = [threading.Thread(target=run, args=(a,)) for a in ("support-desk", "critic")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert set(out) == {"support-desk", "critic"}
    for agent, run_ in out.items():
        assert run_.front.members and run_.front.production_id in {
            r["id"] for r in db.fetchall("SELECT id FROM genepool.prompts WHERE agent_type = %s", (agent,))}
    probe("held: generations of two agent types at once both finished, independent")


# ---------------------------------------------------------------------------------------------
# honest re-runs (7.4)
# ---------------------------------------------------------------------------------------------
def _table_counts(db) -> dict[str, int]:
    return {t: _count(db, t) for t in ("traces", "trace_quarantine", "candidates", "experiment_results",
                                       "front_members", "prompts", "prompt_events")}


def test_rerun_with_the_same_fingerprint_resumes_free_and_writes_no_duplicate(db, probe):
    model = NegativeTokensFakeModel()  # some traces are quarantined: those rows must not duplicate either
    first = run_generation(_gen(db, model))
    counts, calls = _table_counts(db), model.calls
    assert counts["trace_quarantine"] > 0
    again = run_generation(_gen(db, model))
    assert model.calls == calls  # every answer from the cache
    assert _table_counts(db) == counts
    assert again.front == first.front and again.population == first.population
    probe("held: same-fingerprint re-run resumed from the cache", rows_duplicated=0, new_llm_calls_on_resume=0)


def test_rerun_with_other_settings_model_or_benchmark_refuses_and_names_the_change(db, probe):
    gen = _gen(db, RuleFollowingFakeModel())
    traces = collect_traces(gen)
    before = (_table_counts(db), _count(db, "llm_calls"))

    changed = _gen(db, RuleFollowingFakeModel(), config=replace(SMALL, max_rollouts=150))
    with pytest.raises(FingerprintMismatch, match=r"config.max_rollouts: 200 -> 150.*generation 2"):
        collect_traces(changed)
    with pytest.raises(FingerprintMismatch, match=r"config\.max_rollouts"):  # a later step refuses too
        mutate_population(changed, traces, find_failure_clusters(traces))

    class OtherModel(RuleFollowingFakeModel):
        name, model = "fake_other", "other-fake-v2"

    with pytest.raises(FingerprintMismatch, match=r"model: .*rule-following-fake-v1.* -> .*other-fake-v2"):
        collect_traces(_gen(db, OtherModel()))
    items = [i for i in gen.items if i.id != gen.items[0].id]
    with pytest.raises(FingerprintMismatch, match="benchmark_sha256"):
        collect_traces(_gen(db, RuleFollowingFakeModel(), items=items))
    assert (_table_counts(db), _count(db, "llm_calls")) == before  # nothing spent, nothing written
    # the new generation the message asks for runs normally
    run_generation(_gen(db, RuleFollowingFakeModel(), generation=2, config=replace(SMALL, max_rollouts=150)))
    probe("held: re-run after a change of settings, model or benchmark refused naming the change",
          rows_duplicated=0, new_llm_calls_on_resume=0)


def test_a_rerun_replaces_the_partitions_rows_never_keeps_an_earlier_attempts(db, probe):
    """Same fingerprint, but production changed between two attempts of the traces step: the second
    attempt's traces replace the first's (no row of the old production prompt is left to be read)."""
    gen = _gen(db, RuleFollowingFakeModel())
    first = collect_traces(gen)
    reg = gen.registry
    newer = reg.register("support-desk", gen.agent.seed_genome.with_(instructions=("Answer briefly.",)),
                         parent_ids=[first.production_id], operator="add_instruction")
    reg.label(newer.id, "candidate", "test", "a person's candidate")
    reg.approve(newer.id, "alice", "approved between two attempts of the partition")
    second = collect_traces(_gen(db, RuleFollowingFakeModel()))
    stored = db.fetchall("SELECT prompt_id FROM genepool.traces WHERE partition_key = %s", (gen.key,))
    assert second.production_id == newer.id != first.production_id
    assert len(stored) == SMALL.trace_items and {r["prompt_id"] for r in stored} == {newer.id}
    probe("held: a re-run replaces its partition's rows (no stale row of an earlier attempt)", rows_duplicated=0)
