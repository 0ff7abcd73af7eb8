"""Human approval on a real PostgreSQL: approve/reject transitions, hooks, overview numbers and diff."""

from __future__ import annotations

import pytest

from genepool import approval
from genepool.core.genome import Example, Genome, Params
from genepool.registry import PromptRegistry, RegistryError

AGENT = "support-desk"
EXP = "support-desk/g0001"

SEED = Genome(
    role="You are a support-desk assistant.",
    instructions=("Answer with one word.",),
    examples=(Example("My invoice is wrong", "billing"),),
    params=Params(max_tokens=16, stop=("\n",)),
)
# Candidate A adds an instruction; candidate B adds a few-shot example (only visible in the turns).
CAND_A = SEED.with_(instructions=("Answer with one word.", "Use lower case only."))
CAND_B = SEED.with_(examples=(Example("My invoice is wrong", "billing"), Example("The app crashes", "bug")))

# item -> (success, prompt_tokens, completion_tokens, latency_ms)
VALIDATION = {
    "seed": {"v1": (1, 100, 2, 50.0), "v2": (0, 100, 4, 70.0), "v3": (0, 100, 2, 50.0), "v4": (1, 100, 2, 30.0)},
    "a": {"v1": (1, 110, 2, 60.0), "v2": (1, 110, 2, 60.0), "v3": (1, 110, 2, 60.0), "v4": (0, 110, 2, 60.0)},
    "b": {"v1": (1, 130, 2, 80.0), "v2": (0, 130, 2, 80.0), "v3": (0, 130, 2, 80.0), "v4": (1, 130, 2, 80.0),
          "v5": (1, 130, 2, 80.0)},  # v5: the seed was not run on it -> excluded from the comparison
}
TEST = {
    "seed": {"t1": (0, 90, 2, 40.0), "t2": (1, 90, 2, 40.0)},
    "a": {"t1": (1, 95, 1, 45.0), "t2": (1, 95, 1, 45.0)},
}


def _insert_results(db, prompt_id: str, role: str, items: dict) -> None:
    for item, (ok, pt, ct, lat) in items.items():
        db.execute(
            "INSERT INTO genepool.experiment_results (experiment_id, prompt_id, item_id, split, role, success,"
            " score, output, prompt_tokens, completion_tokens, latency_ms) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (EXP, prompt_id, item, role, role, bool(ok), float(ok), "out", pt, ct, lat),
        )


def make_scenario(db) -> dict:
    """A production seed prompt and two candidates of generation 1 with results and a Pareto front."""
    reg = PromptRegistry(db)
    db.execute(
        "INSERT INTO genepool.agents (agent_type, description) VALUES (%s, %s)", (AGENT, "Routes support tickets")
    )
    db.execute(
        "INSERT INTO genepool.experiments (id, agent_type, generation, seed) VALUES (%s, %s, 1, 42)", (EXP, AGENT)
    )
    seed = reg.register(AGENT, SEED)
    reg.label(seed.id, "production", "seed", "initial prompt")
    ids = {"seed": seed.id}
    for key, genome, op in (("a", CAND_A, "add_instruction"), ("b", CAND_B, "add_example")):
        rec = reg.register(AGENT, genome, parent_ids=[seed.id], experiment_id=EXP, generation=1, operator=op)
        reg.label(rec.id, "experimental", "genepool")
        reg.label(rec.id, "candidate", "genepool", "beats production on validation")
        ids[key] = rec.id
    for key, items in VALIDATION.items():
        _insert_results(db, ids[key], "validation", items)
    for key, items in TEST.items():
        _insert_results(db, ids[key], "test", items)
    for key, sr, tok in (("a", 0.75, 112.0), ("b", 0.6, 132.0)):
        db.execute(
            "INSERT INTO genepool.front_members (experiment_id, prompt_id, rank, success_rate, avg_tokens,"
            " avg_latency_ms) VALUES (%s,%s,0,%s,%s,60)",
            (EXP, ids[key], sr, tok),
        )
    return ids


def test_approve_makes_candidate_production_and_archives_the_old_one(db):
    ids = make_scenario(db)
    seen = []
    rec = approval.approve(db, ids["a"], "alice", "better on validation", on_approved=seen.append)
    reg = PromptRegistry(db)
    assert rec.id == ids["a"] and rec.state == "production"
    assert reg.get_prompt(AGENT, "prod").id == ids["a"]
    assert reg.get(ids["seed"]).state == "archived"
    assert reg.get(ids["b"]).state == "candidate"
    assert [r.id for r in seen] == [ids["a"]]
    hist = reg.history(ids["a"])
    assert [e["label"] for e in hist] == ["draft", "experimental", "candidate", "production"]
    assert (hist[-1]["actor"], hist[-1]["reason"]) == ("alice", "better on validation")
    old = reg.history(ids["seed"])
    assert [e["label"] for e in old] == ["draft", "production", "archived"]
    assert old[-1]["actor"] == "alice" and ids["a"] in old[-1]["reason"]


def test_approve_refuses_non_candidates_and_missing_approver(db):
    ids = make_scenario(db)
    with pytest.raises(approval.ApprovalError, match=r"is 'production', not 'candidate'"):
        approval.approve(db, ids["seed"], "alice", "again")
    with pytest.raises(approval.ApprovalError, match="approver is required"):
        approval.approve(db, ids["a"], "   ", "no name")
    with pytest.raises(RegistryError, match="no prompt with id"):
        approval.approve(db, "pr_doesnotexist", "alice", "")
    approval.reject(db, ids["b"], "bob", "worse on test")
    with pytest.raises(approval.ApprovalError, match="'rejected', not 'candidate'"):
        approval.approve(db, ids["b"], "alice", "")
    # nothing changed for production
    assert PromptRegistry(db).get_prompt(AGENT).id == ids["seed"]


def test_reject(db):
    ids = make_scenario(db)
    rec = approval.reject(db, ids["b"], "bob", "adds tokens for no gain")
    assert rec.state == "rejected"
    assert PromptRegistry(db).history(ids["b"])[-1]["reason"] == "adds tokens for no gain"
    with pytest.raises(approval.ApprovalError, match="already rejected"):
        approval.reject(db, ids["b"], "bob", "")
    with pytest.raises(approval.ApprovalError, match="in production"):
        approval.reject(db, ids["seed"], "bob", "")
    with pytest.raises(approval.ApprovalError, match="approver is required"):
        approval.reject(db, ids["a"], "", "")


def test_failing_hook_keeps_the_approval_and_says_so(db):
    ids = make_scenario(db)

    def broken_push(record):
        raise ConnectionError("langfuse unreachable")

    with pytest.raises(approval.ApprovalHookError, match="is approved and in production") as info:
        approval.approve(db, ids["a"], "alice", "ok", langfuse=broken_push)
    assert info.value.record.id == ids["a"]
    assert PromptRegistry(db).get_prompt(AGENT).id == ids["a"]


class FakeLangfuse:
    """Test double for the Langfuse resource: records push_prompt calls instead of sending them."""

    def __init__(self, enabled=True):
        self.enabled = enabled
        self.pushed = []

    def push_prompt(self, name, content, labels, config):
        self.pushed.append({"name": name, "content": content, "labels": labels, "config": config})


def test_langfuse_resource_hook_pushes_the_new_production_prompt(db):
    ids = make_scenario(db)
    lf = FakeLangfuse()
    approval.approve(db, ids["b"], "alice", "ok", langfuse=lf)
    [push] = lf.pushed
    assert push["name"] == AGENT and push["labels"] == ["production"]
    assert push["content"] == CAND_B.content()
    assert push["config"]["prompt_id"] == ids["b"]
    assert push["config"]["examples"][1] == {"input": "The app crashes", "output": "bug"}
    assert push["config"]["params"]["stop"] == ["\n"]
    disabled = FakeLangfuse(enabled=False)
    assert approval.langfuse_hook(disabled) is None
    with pytest.raises(TypeError, match="push_prompt"):
        approval.approve(db, ids["a"], "alice", "ok", langfuse=object())
    assert PromptRegistry(db).get(ids["a"]).state == "candidate"  # a bad hook fails before approving


def test_overview_numbers(db):
    ids = make_scenario(db)
    ov = approval.candidates_overview(db, AGENT)
    assert ov["production"]["id"] == ids["seed"]
    cands = {c["id"]: c for c in ov["candidates"]}
    assert set(cands) == {ids["a"], ids["b"]}
    assert ov["candidates"][0]["id"] == ids["a"]  # sorted by validation success
    a = cands[ids["a"]]
    assert a["experiment_id"] == EXP and a["evaluation_experiment_id"] == EXP
    assert a["parents"] == [ids["seed"]]
    assert [x["id"] for x in a["lineage"]] == [ids["seed"]]
    v = a["scores"]["validation"]
    assert v["items"] == 4
    assert v["candidate"]["success_rate"] == pytest.approx(0.75)
    assert v["production"]["success_rate"] == pytest.approx(0.5)
    assert v["candidate"]["avg_tokens"] == pytest.approx(112.0)
    assert v["production"]["avg_tokens"] == pytest.approx(102.5)
    assert v["production"]["avg_latency_ms"] == pytest.approx(50.0)
    assert v["delta"]["success_rate"] == pytest.approx(0.25)
    assert (v["wins"], v["losses"]) == (2, 1)
    t = a["scores"]["test"]
    assert t["candidate"]["success_rate"] == pytest.approx(1.0)
    assert t["production"]["success_rate"] == pytest.approx(0.5)
    assert t["candidate"]["avg_tokens"] == pytest.approx(96.0)
    assert a["front"]["success_rate"] == pytest.approx(0.75) and a["front"]["rank"] == 0

    b = cands[ids["b"]]
    vb = b["scores"]["validation"]
    assert vb["items"] == 4 and "4 of 5" in vb["note"]  # v5 excluded: production did not run on it
    assert vb["candidate"]["success_rate"] == pytest.approx(0.5)
    assert (vb["wins"], vb["losses"]) == (0, 0)
    assert "test" not in b["scores"]

    pareto = ov["pareto"]
    assert pareto["experiment_id"] == EXP and pareto["role"] == "validation"
    pts = {p["prompt_id"]: p for p in pareto["points"]}
    assert pts[ids["b"]]["success_rate"] == pytest.approx(0.6) and pts[ids["b"]]["avg_tokens"] == pytest.approx(132)
    assert pts[ids["a"]]["on_front"] and pts[ids["b"]]["on_front"] and not pts[ids["seed"]]["on_front"]
    assert pts[ids["seed"]]["state"] == "production"


def test_overview_diff_shows_instruction_and_example_changes(db):
    ids = make_scenario(db)
    cands = {c["id"]: c for c in approval.candidates_overview(db, AGENT)["candidates"]}
    diff_a = cands[ids["a"]]["diff"]
    assert diff_a.startswith(f"--- production {ids['seed']} v1.0.0\n+++ candidate {ids['a']}")
    assert "+    - Use lower case only.\n" in diff_a
    assert "The app crashes" not in diff_a
    diff_b = cands[ids["b"]]["diff"]
    # the new example is a chat turn, not part of the system template: it must still show in the diff
    assert "+  #2 user:\n+      The app crashes\n+  #2 assistant:\n+      bug\n" in diff_b
    assert "Use lower case" not in diff_b
    assert approval.prompt_diff(PromptRegistry(db).get(ids["seed"]), PromptRegistry(db).get(ids["seed"])) == ""


def test_overview_of_unknown_agent_and_without_production(db):
    with pytest.raises(approval.ApprovalError, match="has no prompts"):
        approval.candidates_overview(db, "planner")
    reg = PromptRegistry(db)
    rec = reg.register("planner", Genome(role="You plan."))
    reg.label(rec.id, "candidate", "genepool")
    ov = approval.candidates_overview(db, "planner")
    assert ov["production"] is None
    [c] = ov["candidates"]
    assert c["scores"] == {} and c["diff"].startswith("--- (no production prompt)")
    assert ov["pareto"]["points"] == []
    summary = {r["agent_type"]: r for r in approval.agents_summary(db)}
    assert summary["planner"]["candidates"] == 1 and summary["planner"]["production_version"] is None
