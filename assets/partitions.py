"""Partitions: one optimisation generation of one agent type = one cell of an agent × generation grid.

``generations_partitions`` is a ``MultiPartitionsDefinition`` of two dynamic dimensions, ``agent`` (partition
set ``agents``: agent types, e.g. ``support-desk``) and ``generation`` (set ``generation_numbers``: ``g0001``,
``g0002``, ... added as they are needed), so Dagster's partitions view is a grid of agents by generations
and every metadata plot can be read per agent. Dagster writes such a key as ``support-desk|g0003``.

The library keeps its own key, ``support-desk/g0003`` (experiment ids, the ``partition_key`` columns; the
format lives in ``genepool.keys``). The two meet in ONE pair of functions here: ``library_key`` (Dagster's
key -> the library's, validated) and ``dagster_key`` (agent, generation -> Dagster's key, validated).

Both validate: the agent must be a known agent type (``genepool.agents.all_agents``) and the generation
``gNNNN``; anything else is one ``InvalidPartition`` line naming the fix.

A grid cell exists for every agent × generation number, but an agent has only the generations it started;
``started_generations`` says which (genepool.experiments and the runs' partition tags).
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from genepool.keys import (
    generation_label,
    generations_of,
    parse_generation_label,
    parse_partition_key,
    partition_key,
)

AGENT_DIM = "agent"
GENERATION_DIM = "generation"
AGENTS = "agents"
GENERATION_NUMBERS = "generation_numbers"
# Dagster's tag of a multi-partitioned run's whole key (``support-desk|g0001``) and of each dimension
PARTITION_TAG = "dagster/partition"
AGENT_PARTITION_TAG = f"{PARTITION_TAG}/{AGENT_DIM}"
GENERATION_PARTITION_TAG = f"{PARTITION_TAG}/{GENERATION_DIM}"
# a run with this tag may re-run a closed generation (see ``closed_reason``)
RERUN_TAG = "genepool/rerun"

agents_partitions = dg.DynamicPartitionsDefinition(name=AGENTS)
generation_numbers_partitions = dg.DynamicPartitionsDefinition(name=GENERATION_NUMBERS)
generations_partitions = dg.MultiPartitionsDefinition(
    {AGENT_DIM: agents_partitions, GENERATION_DIM: generation_numbers_partitions}
)


class InvalidPartition(ValueError):
    """A partition key that is not a known agent type × ``gNNNN`` (one line, with the fix)."""


def _known_agent(agent: str, key: object) -> str:
    from genepool.agents import all_agents

    known = sorted(all_agents())
    if agent not in known:
        raise InvalidPartition(
            f"partition {key!s}: agent {agent!r} is not a known agent type; use one of {', '.join(known)}"
        )
    return agent


def dagster_key(agent: str, generation: int) -> dg.MultiPartitionKey:
    """``dagster_key("support-desk", 3)`` -> the grid cell ``support-desk|g0003`` (validated)."""
    try:
        label = generation_label(generation)
    except ValueError as exc:
        raise InvalidPartition(f"partition of agent {agent!r}: {exc}") from None
    _known_agent(agent, f"{agent}|{label}")
    return dg.MultiPartitionKey({AGENT_DIM: agent, GENERATION_DIM: label})


def library_key(key: str | dg.MultiPartitionKey) -> str:
    """Dagster's key (a ``MultiPartitionKey`` or its string ``support-desk|g0003``) -> the library's
    ``support-desk/g0003``; ``InvalidPartition`` for an unknown agent, a bad generation or another form."""
    if isinstance(key, dg.MultiPartitionKey):
        dims: Mapping[str, str] = key.keys_by_dimension
    else:
        parts = key.split("|") if isinstance(key, str) else []
        if len(parts) != 2:
            raise InvalidPartition(
                f"partition {key!r} is not an agent × generation key like 'support-desk|g0001' (agent|gNNNN)"
            )
        dims = {AGENT_DIM: parts[0], GENERATION_DIM: parts[1]}
    if set(dims) != {AGENT_DIM, GENERATION_DIM}:
        raise InvalidPartition(f"partition {key!s} must have the dimensions agent and generation, not {sorted(dims)}")
    agent = _known_agent(dims[AGENT_DIM], key)
    try:
        number = parse_generation_label(dims[GENERATION_DIM])
    except ValueError as exc:
        raise InvalidPartition(f"partition {key!s}: {exc}") from None
    return partition_key(agent, number)


def dagster_key_of(library: str) -> dg.MultiPartitionKey:
    """``support-desk/g0003`` -> ``support-desk|g0003`` (validated)."""
    try:
        agent, number = parse_partition_key(library)
    except ValueError as exc:
        raise InvalidPartition(str(exc)) from None
    return dagster_key(agent, number)


def library_key_of_tags(tags: Mapping[str, str]) -> str | None:
    """The library key of a run from its tags, or None (no partition, or not an agent × generation key).
    Reads Dagster's tags of a grid cell, and the library's form for runs tagged by hand."""
    raw = tags.get(PARTITION_TAG)
    if tags.get(AGENT_PARTITION_TAG) and tags.get(GENERATION_PARTITION_TAG):
        raw = f"{tags[AGENT_PARTITION_TAG]}|{tags[GENERATION_PARTITION_TAG]}"
    if not raw:
        return None
    try:
        return library_key(raw) if "|" in raw else partition_key(*parse_partition_key(raw))
    except (InvalidPartition, ValueError):
        return None


def run_partition_tags(library: str) -> dict[str, str]:
    """The partition tags Dagster puts on a run of this grid cell (``dagster job launch --tags``)."""
    key = dagster_key_of(library)
    return {PARTITION_TAG: str(key), AGENT_PARTITION_TAG: key.keys_by_dimension[AGENT_DIM],
            GENERATION_PARTITION_TAG: key.keys_by_dimension[GENERATION_DIM]}


def add_requests(library_keys: list[str]) -> list[dg.AddDynamicPartitionsRequest]:
    """Sensor requests adding both dimensions of these keys (agents and generation numbers)."""
    keys = [dagster_key_of(k).keys_by_dimension for k in library_keys]
    agents = sorted({k[AGENT_DIM] for k in keys})
    labels = sorted({k[GENERATION_DIM] for k in keys})
    out = []
    if agents:
        out.append(agents_partitions.build_add_request(agents))
    if labels:
        out.append(generation_numbers_partitions.build_add_request(labels))
    return out


def add_partitions(instance: dg.DagsterInstance, library_keys: list[str]) -> None:
    """Add the agents and generation numbers of these keys that the instance does not have yet."""
    for req in add_requests(library_keys):
        have = set(instance.get_dynamic_partitions(req.partitions_def_name))
        new = [k for k in req.partition_keys if k not in have]
        if new:
            instance.add_dynamic_partitions(req.partitions_def_name, new)


def started_generations(instance: dg.DagsterInstance | None, db, agent: str) -> list[int]:
    """The generations this agent started, sorted: its experiments (genepool.experiments) and the generations
    of runs of its grid cells (a run that failed before registering its experiment still counts)."""
    gens: set[int] = set()
    if db is not None:
        gens |= {int(r["generation"]) for r in db.fetchall(
            "SELECT generation FROM genepool.experiments WHERE agent_type = %s", (agent,))}
    if instance is not None:
        for _, values in instance.get_run_tags(tag_keys=[PARTITION_TAG], value_prefix=f"{agent}|"):
            for v in values:
                try:
                    gens.add(parse_partition_key(library_key(v))[1])
                except (InvalidPartition, ValueError):
                    continue
    return sorted(gens)


def next_generation_key(instance: dg.DagsterInstance | None, db, agent: str, also: list[str] = ()) -> str:
    """The library key of the agent's next generation (after every started one and the keys in ``also``)."""
    gens = started_generations(instance, db, agent) + generations_of(list(also), agent)
    return partition_key(agent, max(gens) + 1 if gens else 1)


def closed_reason(db, library: str) -> str | None:
    """Why this generation is closed (its promotion already ran, or a later generation of the agent exists),
    or None when it may run: new, or started and unfinished (a resume, served from the LLM cache)."""
    agent, number = parse_partition_key(library)
    row = db.fetchone("SELECT finished_at FROM genepool.experiments WHERE id = %s", (library,))
    if row is not None and row["finished_at"] is not None:
        return f"its promotion already ran ({row['finished_at'].isoformat(timespec='seconds')})"
    # registered later generations only (their first step ran): a queued run of the next one does not close it
    later = [g for g in started_generations(None, db, agent) if g > number]
    if later:
        return f"a later generation of {agent} exists ({partition_key(agent, later[-1])})"
    return None


__all__ = [
    "AGENTS",
    "AGENT_DIM",
    "AGENT_PARTITION_TAG",
    "GENERATION_DIM",
    "GENERATION_NUMBERS",
    "GENERATION_PARTITION_TAG",
    "PARTITION_TAG",
    "RERUN_TAG",
    "InvalidPartition",
    "add_partitions",
    "add_requests",
    "agents_partitions",
    "closed_reason",
    "dagster_key",
    "dagster_key_of",
    "generation_numbers_partitions",
    "generations_partitions",
    "library_key",
    "library_key_of_tags",
    "next_generation_key",
    "parse_partition_key",
    "partition_key",
    "run_partition_tags",
    "started_generations",
]
