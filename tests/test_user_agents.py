"""User-defined agent types (GENEPOOL_AGENTS_FILE): validated before use, clear errors, nothing stored."""

import json

import pytest

from genepool.agents import AgentConfigError, get_agent, load_agents_file
from genepool.core.benchmark import BenchmarkError

ITEM = {"id": "p1", "input": "Plan: make tea", "expected": "boil water", "checker": "regex", "split": "train",
        "task": "plan", "checker_args": {"pattern": "boil.*"}}


def _write(tmp_path, agents, items=(ITEM,)):
    (tmp_path / "planner.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    f = tmp_path / "agents.json"
    f.write_text(json.dumps(agents))
    return f


def test_a_user_agent_is_loaded_and_usable(tmp_path, monkeypatch):
    f = _write(tmp_path, {"planner": {"benchmark": "planner.jsonl", "seed_prompt": "You plan for {{ agent_type }}.",
                                      "instruction_pool": ["One step per line."]}})
    monkeypatch.setenv("GENEPOOL_AGENTS_FILE", str(f))
    spec = get_agent("planner")
    assert spec.benchmark_path == (tmp_path / "planner.jsonl").resolve()
    assert spec.instruction_pool == ("One step per line.",)
    assert spec.seed_genome.messages("x")[0]["content"] == "You plan for support-desk."


def test_invalid_jinja_in_the_seed_prompt_names_the_field_and_the_fix(tmp_path):
    f = _write(tmp_path, {"planner": {"benchmark": "planner.jsonl", "seed_prompt": "Plan {{ goal }"}})
    with pytest.raises(AgentConfigError, match=r"agent 'planner': field 'seed_prompt': invalid Jinja2 template"):
        load_agents_file(f)
    f = _write(tmp_path, {"planner": {"benchmark": "planner.jsonl", "seed_prompt": "Plan {{ goal }}"}})
    with pytest.raises(AgentConfigError, match=r"undefined variable.*allowed variables"):
        load_agents_file(f)


def test_missing_field_and_bad_benchmark_line_are_named(tmp_path):
    f = _write(tmp_path, {"planner": {"seed_prompt": "Plan."}})
    with pytest.raises(AgentConfigError, match=r"field 'benchmark' is missing"):
        load_agents_file(f)
    bad = dict(ITEM, checker="exactt")
    f = _write(tmp_path, {"planner": {"benchmark": "planner.jsonl", "seed_prompt": "Plan."}}, items=(ITEM, bad))
    with pytest.raises(BenchmarkError, match=r"line 2: field 'checker' is 'exactt'"):
        load_agents_file(f)


def test_builtin_names_cannot_be_redefined(tmp_path, monkeypatch):
    f = _write(tmp_path, {"critic": {"benchmark": "planner.jsonl", "seed_prompt": "x"}})
    monkeypatch.setenv("GENEPOOL_AGENTS_FILE", str(f))
    with pytest.raises(AgentConfigError, match="built in"):
        get_agent("support-desk")
