"""Partitions: one optimisation generation of one agent type = one dynamic partition.

Keys name both, e.g. ``support-desk/g0003``, so each agent type runs its own loop at its own cadence
in one ``generations`` dynamic partition set. The key format itself lives in ``genepool.keys``.
"""

from __future__ import annotations

import dagster as dg

from genepool.keys import generations_of, next_partition_key, parse_partition_key, partition_key

GENERATIONS = "generations"
generations_partitions = dg.DynamicPartitionsDefinition(name=GENERATIONS)

__all__ = [
    "GENERATIONS",
    "generations_of",
    "generations_partitions",
    "next_partition_key",
    "parse_partition_key",
    "partition_key",
]
