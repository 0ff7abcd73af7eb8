"""Step 2, failure clusters: the failed traces grouped into named failure modes (no model call)."""

from __future__ import annotations

from dataclasses import dataclass

from genepool.core.clustering import FailureCluster, cluster_failures
from genepool.steps.traces import TraceSet


@dataclass(frozen=True)
class FailureClusters:
    partition_key: str
    clusters: tuple[FailureCluster, ...]
    traces: int  # how many traces the shares are computed over

    @property
    def failures(self) -> int:
        return sum(c.count for c in self.clusters)

    def to_dict(self) -> dict:
        return {"partition_key": self.partition_key, "traces": self.traces,
                "clusters": [c.to_dict() for c in self.clusters]}


def find_failure_clusters(traces: TraceSet) -> FailureClusters:
    rows = traces.rows()
    failed = [r for r in rows if not r.success]
    return FailureClusters(traces.partition_key, tuple(cluster_failures(failed, len(rows))), len(rows))  # type: ignore[arg-type]
