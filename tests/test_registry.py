import psycopg
import pytest

from genepool.core.genome import Example, Genome, Params
from genepool.db import migrate
from genepool.registry import PromptRegistry, RegistryError, prompt_id_for


def _genome(role="You are a support-desk assistant.", **kw):
    return Genome(role=role, **kw)


def test_migrations_are_idempotent(db_url):
    assert migrate(db_url) == []  # already applied by the fixture


def test_update_and_delete_of_a_prompt_are_refused_by_postgres(db):
    reg = PromptRegistry(db)
    rec = reg.register("support-desk", _genome())
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute("UPDATE genepool.prompts SET content = 'hacked' WHERE id = %s", (rec.id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("DELETE FROM genepool.prompts WHERE id = %s", (rec.id,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("TRUNCATE genepool.prompts CASCADE")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("UPDATE genepool.prompt_events SET label = 'production'")
    assert reg.get(rec.id).content == rec.content


def test_register_is_idempotent_and_versions_by_generation(db):
    reg = PromptRegistry(db)
    a = reg.register("support-desk", _genome())
    again = reg.register("support-desk", _genome())
    assert again.id == a.id == prompt_id_for("support-desk", _genome())
    b = reg.register("support-desk", _genome(instructions=("Answer with one word.",)), generation=1, parent_ids=[a.id])
    c = reg.register("support-desk", _genome(instructions=("Be brief.",)), generation=1, parent_ids=[a.id])
    assert (a.version, b.version, c.version) == ("1.0.0", "1.1.0", "1.1.1")


def test_lineage_follows_all_parents(db):
    reg = PromptRegistry(db)
    a = reg.register("support-desk", _genome())
    b = reg.register("support-desk", _genome(instructions=("x",)), parent_ids=[a.id], generation=1)
    c = reg.register("support-desk", _genome(examples=(Example("hi", "positive"),)), parent_ids=[a.id], generation=1)
    d = reg.register(
        "support-desk",
        _genome(instructions=("x",), examples=(Example("hi", "positive"),), params=Params(max_tokens=8)),
        parent_ids=[b.id, c.id],
        generation=2,
        operator="crossover",
    )
    ids = [p.id for p in reg.lineage(d.id)]
    assert ids[0] == d.id
    assert set(ids[1:3]) == {b.id, c.id}
    assert ids[3] == a.id


def test_lifecycle_is_derived_from_append_only_events(db):
    reg = PromptRegistry(db)
    old = reg.register("support-desk", _genome())
    reg.label(old.id, "prod", "seed", "initial")
    new = reg.register("support-desk", _genome(instructions=("Answer with the label only.",)), parent_ids=[old.id])
    with pytest.raises(RegistryError, match="not 'candidate'"):
        reg.approve(new.id, "alice", "too early")
    reg.label(new.id, "experimental", "genepool")
    reg.label(new.id, "candidate", "genepool", "beats production on validation")
    reg.approve(new.id, "alice", "looks good")
    assert reg.get_prompt("support-desk", label="prod").id == new.id
    assert reg.get(old.id).state == "archived"
    assert [e["label"] for e in reg.history(new.id)] == ["draft", "experimental", "candidate", "production"]
    with pytest.raises(RegistryError, match="not a lifecycle state"):
        reg.label(new.id, "shiny", "bob")


def test_get_prompt_without_production_says_how_to_fix(db):
    with pytest.raises(RegistryError, match="genepool seed"):
        PromptRegistry(db).get_prompt("planner")
