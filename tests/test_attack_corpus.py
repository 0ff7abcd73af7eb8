"""The attack corpus (tests/attack_corpus/) through every entry point (issue 7, point 2).

Each payload goes through: the agents file, a benchmark JSONL, a reflection answer from a scripted provider
(through the real ``reflect`` operator and the sanity check), a mined few-shot example, an OTel GenAI trace,
a Langfuse observation row, and a row inserted straight into ``genepool.prompts`` (rendered with
``registry.get_prompt(...).render``). What must hold everywhere:

- nothing executes: the payloads that run shell commands would create a marker file and print ``X-42``;
  the marker never exists and ``X-42`` never appears in any rendered text or error;
- a payload that could act as code or exhaust memory is refused with ONE line naming the field;
- nothing partial is stored (row counts before/after; a refused trace is one quarantine row, never a trace).

Benchmark items and trace inputs/outputs are *data*: text that only ever becomes the user message of a
request, never a template. Template-looking and injection payloads are therefore accepted there as inert
data and the test shows they stay inert (sent verbatim, never rendered), and that their only road into a
prompt -- becoming a mined few-shot example -- is refused by the sanity check. Control characters, NUL,
invalid UTF-8 and 10 MB fields are refused at every entry point.

Test doubles here are named as such: ``ScriptedReflectionProvider`` (returns a fixed reflection reply) and
``EchoModelDouble`` (returns a fixed label). PostgreSQL is real (a migrated database per module).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from pathlib import Path

import psycopg
import pytest

from genepool import db as postgres
from genepool.agents import AgentConfigError, all_agents, get_agent, load_agents_file
from genepool.core.benchmark import BenchmarkError, load_benchmark
from genepool.core.clustering import FailureCluster
from genepool.core.genome import Genome, GenomeError
from genepool.core.operators import mine_examples, reflect
from genepool.core.otel_import import OtelImportError, import_otel_genai
from genepool.core.sanity import sanity_check
from genepool.core.trace_schema import quarantine, store_traces
from genepool.db import Database, migrate
from genepool.langfuse_io import observations_to_traces
from genepool.llm import LLMClient, RawCompletion
from genepool.registry import PromptRegistry
from genepool.runner import BenchmarkRunner

CORPUS = Path(__file__).parent / "attack_corpus"
CLASSES = ("template", "bomb", "recursion", "error", "control", "binary", "size", "injection")
DATA_INERT = {"template", "bomb", "recursion", "error", "injection"}  # accepted as data where input is data
SEED = Genome(role="You classify customer messages.", instructions=("Answer with the label only.",))


def _load_corpus() -> list[tuple[str, str, bytes]]:
    out = []
    for path in sorted(CORPUS.iterdir()):
        if path.name == "README.md":
            continue
        name = path.name.split(".")[0]
        cls = path.name.split(".")[1]
        if path.suffix == ".json":
            spec = json.loads(path.read_text())
            data = (spec["repeat"] * spec["times"]).encode()
        else:
            data = path.read_bytes()
        out.append((name, cls, data))
    return out


PAYLOADS = _load_corpus()


def test_the_corpus_has_at_least_25_payloads_of_every_class():
    assert len(PAYLOADS) >= 25
    assert {cls for _, cls, _ in PAYLOADS} == set(CLASSES)
    assert any(len(data) >= 10 * 1024 * 1024 for _, _, data in PAYLOADS)


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / f"executed-{uuid.uuid4().hex}"


def payloads(cls: str, marker: Path) -> list[tuple[str, bytes, str]]:
    """(name, raw bytes, text) of one class; text decodes invalid UTF-8 with surrogateescape (worst case)."""
    out = []
    for name, c, data in PAYLOADS:
        if c == cls:
            data = data.replace(b"@MARKER@", str(marker).encode())
            out.append((name, data, data.decode("utf-8", "surrogateescape")))
    return out


def assert_nothing_ran(marker: Path, *texts: object) -> None:
    assert not marker.exists(), "a payload executed a shell command"
    for t in texts:
        assert "X-42" not in str(t), "a payload's command output reached the text"


def one_line(msg: str) -> str:
    assert "\n" not in msg.strip(), msg[:300]
    assert len(msg) < 2000, f"error message of {len(msg)} characters (payload echoed?)"
    return msg


# --- test doubles -------------------------------------------------------------------------------------
class ScriptedReflectionProvider:
    """TEST DOUBLE of a reflection model: always answers the scripted reply, counts calls."""

    name = "scripted_reflection"
    model = "scripted-reflection-v1"

    def __init__(self, reply: str):
        self.reply = reply
        self.calls = 0

    def complete(self, messages, params) -> RawCompletion:
        self.calls += 1
        return RawCompletion(self.reply, 10, 10, 1.0)


class EchoModelDouble:
    """TEST DOUBLE of a task model: answers 'positive' and records every request it was sent."""

    name = "echo_double"
    model = "echo-double-v1"

    def __init__(self):
        self.requests: list[list[dict]] = []

    def complete(self, messages, params) -> RawCompletion:
        self.requests.append(messages)
        return RawCompletion("positive", 5, 1, 1.0)


# --- a migrated database for the module -------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_db(pg_server_url) -> Database:
    name = f"attack_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres._with_database(pg_server_url, name)
    migrate(url)
    return Database(url)


def counts(db: Database) -> dict[str, int]:
    return {
        t: db.fetchone(f"SELECT count(*) AS n FROM genepool.{t}")["n"]
        for t in ("prompts", "prompt_events", "traces", "trace_quarantine", "candidates")
    }


# ======================================================================================================
# 1. agents file (GENEPOOL_AGENTS_FILE)
# ======================================================================================================
@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_agents_file_refuses_every_payload(cls, marker, tmp_path, monkeypatch, probe):
    item = {"id": "p1", "input": "Plan: make tea", "expected": "boil", "checker": "regex", "split": "train",
            "task": "plan", "checker_args": {"pattern": "boil"}}
    (tmp_path / "planner.jsonl").write_text(json.dumps(item) + "\n")
    f = tmp_path / "agents.json"
    monkeypatch.setenv("GENEPOOL_AGENTS_FILE", str(f))
    for name, data, text in payloads(cls, marker):
        if cls == "binary":
            f.write_bytes(b'{"planner": {"benchmark": "planner.jsonl",\n "seed_prompt": "' + data + b'"}}')
        else:
            f.write_text(json.dumps({"planner": {"benchmark": "planner.jsonl", "seed_prompt": text}}))
        with pytest.raises(AgentConfigError) as err:
            load_agents_file(f)
        msg = one_line(str(err.value))
        assert msg.startswith(str(f)), msg
        if cls == "binary":
            assert re.search(r"line 2 column \d+: byte 0x[0-9a-f]{2} is not UTF-8", msg), msg
        elif cls == "size":
            assert "bytes (max 1,000,000)" in msg, msg  # the file is refused by its size before parsing
        else:
            assert "field 'seed_prompt': " in msg, (name, msg)
        assert "planner" not in all_agents()
        with pytest.raises(AgentConfigError):
            get_agent("planner")
        assert get_agent("critic").agent_type == "critic"  # the built-in agents still work
        assert_nothing_ran(marker, msg)
    probe(f"held: agents file refuses {cls} payloads with one line naming the field; nothing ran",
          name=f"attack/agents_file/{cls}")


# ======================================================================================================
# 2. benchmark JSONL
# ======================================================================================================
@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_benchmark_jsonl_refuses_or_keeps_payloads_inert(cls, marker, tmp_path, probe):
    good = {"id": "a1", "input": "I love it", "expected": "positive", "checker": "exact_label", "split": "train",
            "task": "sentiment"}
    p = tmp_path / "bench.jsonl"
    for _name, data, text in payloads(cls, marker):
        head = (json.dumps(good) + "\n").encode()
        if cls == "binary":
            line = b'{"id": "a2", "input": "' + data + b'", "expected": "positive", "checker": "exact_label", ' \
                   b'"split": "train", "task": "sentiment"}\n'
        else:
            line = (json.dumps({**good, "id": "a2", "input": text}) + "\n").encode()
        p.write_bytes(head + line)
        if cls in DATA_INERT:
            items = load_benchmark(p)
            assert items[1].input == text  # kept verbatim as data
            model = EchoModelDouble()
            results = BenchmarkRunner(LLMClient(model), variables={"agent_type": "support-desk"}).run(SEED, items)
            sent = model.requests[1]
            assert sent[0]["content"] == "You classify customer messages.\n\nRules:\n- Answer with the label only."
            assert sent[-1] == {"role": "user", "content": text}  # the user message, never rendered
            assert_nothing_ran(marker, results, sent)
            continue
        with pytest.raises(BenchmarkError) as err:
            load_benchmark(p)
        msg = one_line(str(err.value))
        if cls == "binary":
            assert re.search(r"bench.jsonl: line 2 column \d+: byte 0x[0-9a-f]{2} is not UTF-8", msg), msg
        elif cls == "size":
            assert msg.startswith("bench.jsonl line 2: is ") and "max 200,000" in msg, msg
        else:
            assert msg.startswith("bench.jsonl line 2: field 'input' contains"), msg
        assert_nothing_ran(marker, msg)
    outcome = "kept as inert data (sent verbatim as the user message, never rendered)" if cls in DATA_INERT else (
        "refused with one line naming the line and field")
    probe(f"held: benchmark JSONL {cls} payloads {outcome}; nothing ran", name=f"attack/benchmark/{cls}")


# ======================================================================================================
# 3. a reflection answer (scripted provider, real reflect operator, real sanity check)
# ======================================================================================================
CLUSTERS = [FailureCluster(key="sentiment:extra_words", name="sentiment: extra words", signature="extra_words",
                           count=3, share=1.0,
                           hint="Answer with the label only.", tasks=("sentiment",),
                           example_trace_ids=(), example_messages=())]


@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_reflection_answer_payloads_are_named_rejections(cls, marker, probe):
    for name, _data, text in payloads(cls, marker):
        reply = f"PROMPT 1:\n- {text}\n- Answer with one word only.\n"
        provider = ScriptedReflectionProvider(reply)
        notes: list[str] = []
        children = reflect(SEED, random.Random(0), CLUSTERS, LLMClient(provider), n=1, notes=notes)
        assert provider.calls == 1
        named = []
        for child in children:
            verdict = sanity_check(child)
            hostile = [i for i, rule in enumerate(child.instructions) if rule != "Answer with one word only."]
            if hostile and cls != "binary":  # the parser tidies a rule (capital, final '.'), so find it by position
                assert not verdict.ok, (name, child)
                named += [r for r in verdict.reasons if any(r.startswith(f"instructions[{i}]: ") for i in hostile)]
                assert named, (name, verdict.reasons)
            assert_nothing_ran(marker, verdict.reasons)
        dropped = any("dropped" in n or "no usable rule" in n for n in notes)
        if cls == "binary":
            # invalid bytes cannot reach a rule: the LLM client makes every answer storable (bad bytes -> '?'),
            # so what is left is plain text; it never carries a surrogate into a prompt
            assert all(not re.search("[\ud800-\udfff\x00]", r) for c in children for r in c.instructions)
            continue
        assert named or dropped, (name, children, notes)  # a named rejection, or dropped by the parser with a note
        for r in named:
            one_line(r)
        assert_nothing_ran(marker, notes)
    probe(f"held: reflection replies with {cls} payloads give no accepted child (named rejection or parser note)",
          name=f"attack/reflection/{cls}")


@pytest.mark.probe
def test_a_cached_bad_reflection_answer_is_rejected_again_on_every_rerun(corpus_db, marker, probe):
    text = next(t for n, _, t in payloads("template", marker) if n == "06-self-context")  # passes the parser
    provider = ScriptedReflectionProvider(f"PROMPT 1:\n- {text}\n- Answer with one word only.\n")
    reasons = []
    before = counts(corpus_db)
    for _run in range(3):
        client = LLMClient(provider, corpus_db)  # cached in PostgreSQL: re-runs replay the same answer
        children = reflect(SEED, random.Random(0), CLUSTERS, client, n=1, partition_key="support-desk/g0042")
        verdicts = [sanity_check(c) for c in children if len(c.instructions) == 2]
        assert verdicts and not any(v.ok for v in verdicts)
        reasons.append(verdicts[0].reasons)
    assert provider.calls == 1  # answered once, replayed from the cache twice
    assert reasons[0] == reasons[1] == reasons[2]
    assert any(r.startswith("instructions[0]: function and method calls are not allowed") for r in reasons[0]), reasons
    after = counts(corpus_db)
    assert {k: after[k] - before[k] for k in after} == dict.fromkeys(after, 0)
    assert_nothing_ran(marker, reasons)
    probe("held: a cached reflection answer with a sandbox-escape gadget is rejected with the same named reason "
          "on every re-run, no crash", name="attack/reflection/cached_rerun", new_llm_calls_on_resume=0)


# ======================================================================================================
# 4. a mined few-shot example (real mine_examples, real sanity check)
# ======================================================================================================
@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_mined_example_payloads_are_named_rejections(cls, marker, probe):
    for name, _data, text in payloads(cls, marker):
        success = {"input": text, "output": "positive", "task": "sentiment", "split": "train", "success": True}
        child = mine_examples(SEED, random.Random(0), successes=[success], k=1)
        assert child.examples and child.examples[0].input == text
        verdict = sanity_check(child)
        assert not verdict.ok
        assert any(r.startswith("examples[0].input: ") for r in verdict.reasons), (name, verdict.reasons)
        for r in verdict.reasons:
            one_line(r)
        # even rendered inline (bypassing the sanity check), an example is literal text: nothing in it runs
        try:
            system = child.with_(example_format="inline").messages("hi", {"agent_type": "a"})[0]["content"]
            assert text in system
        except GenomeError as exc:
            system = one_line(str(exc))
            assert system.startswith("examples[0].input: ")
        assert_nothing_ran(marker, verdict.reasons, system)
    probe(f"held: a mined example with a {cls} payload is a named rejection (examples[0].input); inline rendering "
          "keeps it literal", name=f"attack/mined_example/{cls}")


# ======================================================================================================
# 5. an OTel GenAI trace and 6. a Langfuse observation row
# ======================================================================================================
def _otel(text: str, span_id: str) -> dict:
    attrs = [
        {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
        {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
        {"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(
            [{"role": "user", "parts": [{"type": "text", "content": text}]}])}},
        {"key": "gen_ai.output.messages", "value": {"stringValue": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "positive"}]}])}},
    ]
    span = {"traceId": "ab" * 16, "spanId": span_id, "name": "chat m", "startTimeUnixNano": "1",
            "endTimeUnixNano": "2", "attributes": attrs}
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "t"}, "spans": [span]}]}]}


def _store(db: Database, valid, bad, source: str) -> None:
    store_traces(db, valid)
    if bad:
        quarantine(db, bad, source)


def _check_trace_outcome(db, cls, before, valid, bad, text, marker):
    after = counts(db)
    delta = {k: after[k] - before[k] for k in after}
    if cls in DATA_INERT:
        assert len(valid) == 1 and not bad and valid.iloc[0]["input"] == text
        assert delta == {**dict.fromkeys(delta, 0), "traces": 1}  # stored as data, verbatim
    else:
        assert len(valid) == 0 and len(bad) == 1
        reason = one_line(bad[0]["reason"])
        assert reason.startswith("input: "), reason
        assert delta == {**dict.fromkeys(delta, 0), "trace_quarantine": 1}  # one quarantine row, no trace
        stored = db.fetchone("SELECT raw, reason FROM genepool.trace_quarantine ORDER BY id DESC LIMIT 1")
        assert len(json.dumps(stored["raw"])) < 50_000  # evidence cut, not 10 MB
    assert_nothing_ran(marker, valid.to_dict("records"), bad)


@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_otel_trace_payloads(cls, corpus_db, marker, tmp_path, probe):
    for i, (_name, data, text) in enumerate(payloads(cls, marker)):
        span_id = f"{uuid.uuid4().hex[:12]}{i:04x}"
        before = counts(corpus_db)
        if cls == "binary":  # raw invalid UTF-8 in the export file: refused before parsing, nothing stored
            f = tmp_path / "export.json"
            f.write_bytes(json.dumps(_otel("PLACEHOLDER", span_id)).encode().replace(b"PLACEHOLDER", data))
            with pytest.raises(OtelImportError) as err:
                import_otel_genai(f, "support-desk")
            msg = one_line(str(err.value))
            assert re.search(r"line 1 column \d+: byte 0x[0-9a-f]{2} is not UTF-8", msg), msg
            assert counts(corpus_db) == before
            # decoded leniently (lone surrogates), the row is quarantined naming the field
            valid, bad = import_otel_genai(_otel(text, span_id), "support-desk")
            _store(corpus_db, valid, bad, "otel")
            assert len(valid) == 0 and bad[0]["reason"].startswith("input: contains an unpaired surrogate")
            assert_nothing_ran(marker, bad)
            continue
        valid, bad = import_otel_genai(_otel(text, span_id), "support-desk")
        _store(corpus_db, valid, bad, "otel")
        _check_trace_outcome(corpus_db, cls, before, valid, bad, text, marker)
    probe(f"held: OTel trace with {cls} payloads: " + ("stored verbatim as inert data" if cls in DATA_INERT else
          "quarantined with one reason naming the field, no trace row"), name=f"attack/otel/{cls}")


@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_langfuse_observation_payloads(cls, corpus_db, marker, probe):
    for _name, _data, text in payloads(cls, marker):
        obs = {"id": f"obs-{uuid.uuid4().hex}", "traceId": "t1", "type": "GENERATION", "name": "chat",
               "input": text, "output": "positive", "metadata": {"success": True}, "level": "DEFAULT"}
        before = counts(corpus_db)
        valid, bad = observations_to_traces([obs], "support-desk")
        _store(corpus_db, valid, bad, "langfuse")
        if cls == "binary":
            assert bad and bad[0]["reason"].startswith("input: contains an unpaired surrogate"), bad
            after = counts(corpus_db)
            assert after["traces"] == before["traces"] and after["trace_quarantine"] == before["trace_quarantine"] + 1
            assert_nothing_ran(marker, bad)
            continue
        _check_trace_outcome(corpus_db, cls, before, valid, bad, text, marker)
    probe(f"held: Langfuse observation with {cls} payloads: " + ("stored verbatim as inert data" if cls in DATA_INERT
          else "quarantined with one reason naming the field, no trace row"), name=f"attack/langfuse/{cls}")


# ======================================================================================================
# 7. a row inserted straight into genepool.prompts, rendered through the registry
# ======================================================================================================
def _forge(db: Database, agent: str, genome_json: str, content: str) -> str:
    """INSERT a prompt row and a draft event straight into the tables (as an attacker with SQL access would)."""
    digest = hashlib.sha256(f"{agent}\n{genome_json}".encode("utf-8", "surrogatepass")).hexdigest()
    pid = f"pr_{digest[:16]}"
    with db.connection() as conn:
        conn.execute(
            "INSERT INTO genepool.prompts (id, agent_type, version, content, genome, genome_canonical,"
            " parent_ids, generation, operator) VALUES (%s,%s,'1.0.0',%s,%s,%s,'{}',0,'forged')",
            (pid, agent, content, genome_json, genome_json),
        )
        conn.execute("INSERT INTO genepool.prompt_events (prompt_id, agent_type, label, actor, reason)"
                     " VALUES (%s,%s,'draft','mallory','forged')", (pid, agent))
    return pid


@pytest.mark.probe
@pytest.mark.parametrize("cls", CLASSES)
def test_a_forged_prompt_row_is_refused_at_render(cls, corpus_db, marker, probe):
    reg = PromptRegistry(corpus_db)
    for i, (name, _data, text) in enumerate(payloads(cls, marker)):
        for where in ("genome", "content"):
            agent = f"mallory-{cls}-{i}-{where}"
            corpus_db.execute("INSERT INTO genepool.agents (agent_type, description, benchmark_path)"
                              " VALUES (%s,'','')", (agent,))
            # the payload in the genome's role (the id is its true hash, so the database's checks pass), or only
            # in the stored content column next to a harmless genome
            genome = SEED.with_(role=text) if where == "genome" else SEED
            before = counts(corpus_db)
            try:
                pid = _forge(corpus_db, agent, genome.canonical_json(), text if where == "content" else "forged")
            except (psycopg.DataError, UnicodeEncodeError) as exc:
                # PostgreSQL itself refuses NUL bytes and invalid UTF-8 in text and jsonb: nothing stored
                assert cls in ("control", "binary"), (name, exc)
                assert counts(corpus_db) == before
                continue
            assert counts(corpus_db) == {**before, "prompts": before["prompts"] + 1,
                                         "prompt_events": before["prompt_events"] + 1}
            record = reg.get_prompt(agent, "latest")
            if where == "content":
                # the registry serves the verified genome's own template, never the content column
                msgs = record.render("hi")
                assert text not in json.dumps(msgs) and msgs[0]["content"].startswith("You classify")
                assert_nothing_ran(marker, msgs)
                continue
            with pytest.raises(GenomeError) as err:
                record.render("hi")
            msg = one_line(str(err.value))
            assert msg.startswith(f"prompt {pid}"), msg
            assert ("injection phrase" in msg) if cls == "injection" else msg.startswith(f"prompt {pid}: role: "), msg
            assert_nothing_ran(marker, msg)
    probe(f"held: a prompts row forged with {cls} payloads is refused at render with one line naming the prompt "
          "and field (or refused by PostgreSQL on insert); a forged content column is never served",
          name=f"attack/prompts_row/{cls}")


# ======================================================================================================
# In the generation: the mutate step stores a hostile reflective child as a named rejection, every re-run
# ======================================================================================================
@pytest.mark.probe
def test_the_mutate_step_stores_a_hostile_reflection_child_as_a_named_rejection(db, marker, probe):
    from doubles import RuleFollowingFakeModel

    from genepool.settings import GenerationConfig
    from genepool.steps import Generation, collect_traces, find_failure_clusters, mutate_population

    gadget = next(t for n, _, t in payloads("template", marker) if n == "06-self-context")
    reflection = ScriptedReflectionProvider(f"PROMPT 1:\n- {gadget}\n- Answer with one word only.\n")
    config = GenerationConfig(seed=1234, trace_items=15, population_size=6, n_targets=6, n_controls=4,
                              validate_top=2, validation_items=10, test_items=5, max_rollouts=200, n_reflect=1)
    populations = []
    for _run in range(2):  # the second run is a re-run of the partition: the reflection answer comes from the cache
        gen = Generation(db, LLMClient(RuleFollowingFakeModel(), db), "support-desk", 1, config,
                         reflection_llm=LLMClient(reflection, db))
        traces = collect_traces(gen)
        populations.append(mutate_population(gen, traces, find_failure_clusters(traces)))
    assert reflection.calls == 1
    for population in populations:
        hostile = [c for c in population.children if c.operator == "reflect" and len(c.genome.instructions) == 2]
        assert hostile and all(c.status == "rejected" and c.prompt_id is None for c in hostile)
        assert all(one_line(c.reason).startswith("instructions[0]: function and method calls") for c in hostile)
    rows = db.fetchall("SELECT status, reason, prompt_id FROM genepool.candidates WHERE operator = 'reflect'")
    assert rows and all(r["status"] == "rejected" and r["prompt_id"] is None for r in rows)
    assert len(db.fetchall("SELECT 1 FROM genepool.candidates")) == config.population_size  # replaced, not doubled
    registered = db.fetchall("SELECT genome FROM genepool.prompts")
    assert not any("__init__" in json.dumps(r["genome"]) for r in registered)  # never registered as a prompt
    assert_nothing_ran(marker, [c.reason for p in populations for c in p.children])
    probe("held: the mutate step stores a reflective child carrying a sandbox-escape gadget as 'rejected' with the "
          "named reason, on the first run and the cached re-run; nothing registered, no crash",
          name="attack/generation/reflection_child", new_llm_calls_on_resume=0)
