"""Partitions: one optimisation generation of one agent type = one dynamic partition.

Keys name both, e.g. ``support-desk/g0003``, so each agent type runs its own loop at its own cadence
in one ``generations`` dynamic partition set.
"""

from __future__ import annotations

import re

import dagster as dg

GENERATIONS = "generations"
generations_partitions = dg.DynamicPartitionsDefinition(name=GENERATIONS)

_KEY = re.compile(r"^(?P<agent>[a-z][a-z0-9_-]*)/g(?P<gen>\d{4,})$")


def partition_key(agent_type: str, generation: int) -> str:
    key = f"{agent_type}/g{generation:04d}"
    parse_partition_key(key)
    return key


def parse_partition_key(key: str) -> tuple[str, int]:
    m = _KEY.match(key)
    if not m:
        raise ValueError(
            f"partition key {key!r} is not of the form '<agent-type>/g<NNNN>', e.g. 'support-desk/g0001' "
            "(agent types are lowercase letters, digits, '-' and '_')"
        )
    return m.group("agent"), int(m.group("gen"))


def generations_of(keys: list[str], agent_type: str) -> list[int]:
    out = []
    for k in keys:
        try:
            a, g = parse_partition_key(k)
        except ValueError:
            continue
        if a == agent_type:
            out.append(g)
    return sorted(out)


def next_partition_key(existing_keys: list[str], agent_type: str) -> str:
    gens = generations_of(existing_keys, agent_type)
    return partition_key(agent_type, (gens[-1] + 1) if gens else 1)
