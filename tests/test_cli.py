"""The `genepool` command line (orchestration.cli.main) on a real PostgreSQL test database.

GENEPOOL_DATABASE_URL points at the test database and GENEPOOL_DATA_DIR at an empty temporary folder,
so no embedded server in the project folder is started or touched (checked at the end of each test).
"""

from __future__ import annotations

import json

import pytest

from genepool.agents import get_agent
from genepool.core.genome import Example
from genepool.registry import PromptRegistry
from orchestration import cli


@pytest.fixture
def env(monkeypatch, tmp_path, db_url):
    monkeypatch.setenv("GENEPOOL_DATABASE_URL", db_url)
    monkeypatch.setenv("GENEPOOL_DATA_DIR", str(tmp_path / "data"))
    for var in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)  # approval must not try to push anywhere
    yield tmp_path
    assert not (tmp_path / "data" / "pg").exists(), "the CLI started an embedded server instead of the test db"


@pytest.fixture
def prompts(db, env):
    """support-desk: seed in production, a generation-1 child (candidate) and its generation-2 child (draft);
    critic: its seed in production."""
    reg = PromptRegistry(db)
    spec = get_agent("support-desk")
    seed = reg.register("support-desk", spec.seed_genome, operator="seed")
    reg.label(seed.id, "production", "genepool-seed", "seed prompt")
    child = reg.register(
        "support-desk", spec.seed_genome.with_(instructions=("Answer with the label only, in lowercase.",)),
        parent_ids=[seed.id], generation=1, operator="add_instruction",
    )
    reg.label(child.id, "candidate", "genepool", "beats production on validation")
    grandchild = reg.register(
        "support-desk",
        child.genome.with_(examples=(Example("Rate the priority of: my card was charged twice", "high"),)),
        parent_ids=[child.id], generation=2, operator="mine_examples",
    )
    critic = reg.register("critic", get_agent("critic").seed_genome, operator="seed")
    reg.label(critic.id, "production", "genepool-seed", "seed prompt")
    return {"seed": seed.id, "child": child.id, "grandchild": grandchild.id, "critic": critic.id}


def test_approve_puts_the_candidate_in_production(prompts, db, capsys):
    cli.main(["approve", prompts["child"], "--by", "alice", "--reason", "fewer format errors"])
    out = capsys.readouterr().out
    assert f"approved: {prompts['child']}" in out and "now in production" in out
    reg = PromptRegistry(db)
    assert reg.get_prompt("support-desk").id == prompts["child"]
    assert reg.get(prompts["seed"]).state == "archived"
    assert reg.get_prompt("critic").id == prompts["critic"]  # another agent's production is untouched
    event = reg.history(prompts["child"])[-1]
    assert (event["label"], event["actor"], event["reason"]) == ("production", "alice", "fewer format errors")


@pytest.mark.parametrize("which", ["grandchild", "seed"])
def test_approve_of_a_non_candidate_exits_2_and_names_the_fix(prompts, db, capsys, which):
    with pytest.raises(SystemExit) as exc:
        cli.main(["approve", prompts[which], "--by", "alice", "--reason", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert prompts[which] in err and "not 'candidate'" in err
    assert "genepool prompts --state candidate" in err  # the fix
    assert PromptRegistry(db).get_prompt("support-desk").id == prompts["seed"]


def test_approve_of_an_unknown_prompt_and_without_a_name_exit_2(prompts, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["approve", "pr_0000000000000000", "--by", "alice", "--reason", "x"])
    assert exc.value.code == 2
    assert "no prompt with id 'pr_0000000000000000'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["approve", prompts["child"], "--by", "  ", "--reason", "x"])
    assert exc.value.code == 2
    assert "approver is required" in capsys.readouterr().err


def test_reject_a_candidate_and_refuse_to_reject_production(prompts, db, capsys):
    cli.main(["reject", prompts["child"], "--by", "bob", "--reason", "too long"])
    assert f"rejected: {prompts['child']}" in capsys.readouterr().out
    reg = PromptRegistry(db)
    assert reg.get(prompts["child"]).state == "rejected"
    assert reg.list("support-desk", "candidate") == []
    with pytest.raises(SystemExit) as exc:  # a rejected prompt can no longer be approved
        cli.main(["approve", prompts["child"], "--by", "alice", "--reason", "x"])
    assert exc.value.code == 2 and "'rejected', not 'candidate'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["reject", prompts["seed"], "--by", "bob", "--reason", "x"])
    assert exc.value.code == 2 and "in production" in capsys.readouterr().err
    assert reg.get(prompts["seed"]).state == "production"


def test_prompts_lists_with_state_and_filters(prompts, capsys):
    cli.main(["prompts"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    by_id = {line.split()[0]: line for line in lines}
    assert set(by_id) == set(prompts.values())
    assert "production" in by_id[prompts["seed"]] and "candidate" in by_id[prompts["child"]]
    assert "draft" in by_id[prompts["grandchild"]] and "critic" in by_id[prompts["critic"]]

    cli.main(["prompts", "--agent", "support-desk", "--state", "candidate"])
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == [prompts["child"]]
    cli.main(["prompts", "--agent", "critic"])
    assert [line.split()[0] for line in capsys.readouterr().out.strip().splitlines()] == [prompts["critic"]]


def test_lineage_lists_the_prompt_and_its_ancestors_nearest_first(prompts, capsys):
    cli.main(["lineage", prompts["grandchild"]])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [prompts["grandchild"], prompts["child"], prompts["seed"]]
    assert f"parents: {prompts['child']}" in lines[0]
    assert "parents: -" in lines[2]
    with pytest.raises(SystemExit) as exc:
        cli.main(["lineage", "pr_ffffffffffffffff"])
    assert exc.value.code == 2 and "pr_ffffffffffffffff" in capsys.readouterr().err


def test_show_prints_a_prompt_as_json_by_id_or_by_label(prompts, capsys):
    cli.main(["show", prompts["grandchild"]])
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == prompts["grandchild"] and shown["state"] == "draft"
    assert shown["parents"] == [prompts["child"]]
    assert shown["genome"]["examples"] == [{"input": "Rate the priority of: my card was charged twice",
                                            "output": "high"}]
    assert "Answer with the label only" in shown["content"]

    cli.main(["show", "--agent", "critic"])  # default label: prod
    assert json.loads(capsys.readouterr().out)["id"] == prompts["critic"]
    cli.main(["show", "--agent", "support-desk", "--label", "candidate"])
    assert json.loads(capsys.readouterr().out)["id"] == prompts["child"]
    with pytest.raises(SystemExit) as exc:
        cli.main(["show", "--agent", "support-desk", "--label", "nonsense"])
    assert exc.value.code == 2 and "label 'nonsense' is unknown" in capsys.readouterr().err
