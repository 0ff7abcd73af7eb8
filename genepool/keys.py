"""The partition-key format, written once: one optimisation generation of one agent type is
``<agent-type>/g<NNNN>``, e.g. ``support-desk/g0003``. The library (experiment ids, trace partition keys)
and the Dagster partitions (assets/partitions.py) both use these functions."""

from __future__ import annotations

import re

_KEY = re.compile(r"^(?P<agent>[a-z][a-z0-9_-]*)/g(?P<gen>\d{4,})$")
_LABEL = re.compile(r"^g(?P<gen>\d{4,})$")


def generation_label(generation: int) -> str:
    """``generation_label(3) == "g0003"``: the generation part of a key."""
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError(f"generation={generation!r} must be an integer >= 0")
    return f"g{generation:04d}"


def parse_generation_label(label: str) -> int:
    """``parse_generation_label("g0003") == 3``; one clear ValueError naming the expected form otherwise."""
    m = _LABEL.match(label) if isinstance(label, str) else None
    if not m:
        raise ValueError(f"generation {label!r} is not of the form 'gNNNN', e.g. 'g0001'")
    return int(m.group("gen"))


def partition_key(agent_type: str, generation: int) -> str:
    """``partition_key("support-desk", 3) == "support-desk/g0003"``; raises ValueError on a bad agent type."""
    key = f"{agent_type}/{generation_label(generation)}"
    parse_partition_key(key)
    return key


def parse_partition_key(key: str) -> tuple[str, int]:
    """(agent type, generation number) of a key; one clear ValueError naming the expected form otherwise."""
    m = _KEY.match(key) if isinstance(key, str) else None
    if not m:
        raise ValueError(
            f"partition key {key!r} is not of the form '<agent-type>/g<NNNN>', e.g. 'support-desk/g0001' "
            "(agent types are lowercase letters, digits, '-' and '_')"
        )
    return m.group("agent"), int(m.group("gen"))


def generations_of(keys: list[str], agent_type: str) -> list[int]:
    """The generation numbers of ``agent_type`` among ``keys`` (other or malformed keys skipped), sorted."""
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
