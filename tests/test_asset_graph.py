"""Snapshot of the code location's shape: asset keys, dependencies, partitions, groups, the checks on
each asset (and which are partitioned), what each job selects, and what each sensor targets
(tests/snapshots/asset_graph.json).

A change to the graph fails this test with a readable diff. If the change is intended, rewrite the
snapshot and commit it with the change:  GENEPOOL_UPDATE_SNAPSHOTS=1 pytest tests/test_asset_graph.py
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from orchestration.definitions import defs

SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "asset_graph.json"
UPDATE_ENV = "GENEPOOL_UPDATE_SNAPSHOTS"


def _partitions(pdef: dg.PartitionsDefinition | None) -> dict[str, Any] | None:
    if pdef is None:
        return None
    out: dict[str, Any] = {"type": type(pdef).__name__}
    if isinstance(pdef, dg.DynamicPartitionsDefinition):
        out["name"] = pdef.name
    elif isinstance(pdef, dg.MultiPartitionsDefinition):
        out["dimensions"] = {d.name: _partitions(d.partitions_def) for d in pdef.partitions_defs}
    elif isinstance(pdef, dg.StaticPartitionsDefinition):
        out["keys"] = list(pdef.get_partition_keys())
    return out


def _check(key: dg.AssetCheckKey) -> str:
    return f"{key.asset_key.to_user_string()}:{key.name}"


def graph_snapshot(definitions: dg.Definitions) -> dict[str, Any]:
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "partitions": _partitions(node.partitions_def),
            "checks": sorted(k.name for k in node.check_keys),
            "partitioned_checks": sorted(k.name for k in node.check_keys if graph.get(k).partitions_def is not None),
        }
    jobs = {}
    for job in sorted(definitions.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):  # Dagster's implicit asset job
            continue
        layer = job.asset_layer
        jobs[job.name] = {
            "assets": sorted(k.to_user_string() for k in layer.selected_asset_keys),
            "checks": sorted(_check(k) for k in layer.asset_graph.asset_check_keys)
            if layer.selected_asset_keys
            else [],
            "ops": sorted(job.graph.node_names()) if not layer.selected_asset_keys else [],
            "partitions": _partitions(job.partitions_def),
        }
    sensors = {}
    for sensor in sorted(definitions.sensors or [], key=lambda s: s.name):
        sensors[sensor.name] = {
            "type": type(sensor).__name__,
            "jobs": sorted(t.job_name for t in sensor.targets),
            "assets": sorted(k.to_user_string() for k in sensor.asset_selection.resolve(graph))
            if sensor.asset_selection is not None
            else [],
            "default_status": sensor.default_status.value,
        }
    return {"assets": assets, "jobs": jobs, "sensors": sensors}


def _dump(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


def test_asset_graph_matches_the_snapshot():
    current = _dump(graph_snapshot(defs))
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(current)
    if not SNAPSHOT.exists():
        pytest.fail(f"{SNAPSHOT} is missing: create it with {UPDATE_ENV}=1 pytest tests/test_asset_graph.py")
    recorded = SNAPSHOT.read_text()
    if current != recorded:
        diff = "".join(
            difflib.unified_diff(
                recorded.splitlines(keepends=True),
                current.splitlines(keepends=True),
                fromfile="tests/snapshots/asset_graph.json (committed)",
                tofile="the code location now",
                n=2,
            )
        )
        pytest.fail(
            f"the asset graph changed. If intended, run `{UPDATE_ENV}=1 pytest tests/test_asset_graph.py` and commit "
            f"the snapshot.\n{diff}",
            pytrace=False,
        )


def test_the_snapshot_covers_the_generation_loop():
    """Guards the snapshot itself: the parts of the graph the README describes are in it."""
    snap = json.loads(SNAPSHOT.read_text())
    chain = ["traces", "failure_clusters", "mutated_population", "experiment_results", "pareto_front"]
    for parent, child in itertools.pairwise(chain):
        assert parent in snap["assets"][child]["deps"], (parent, child)
    assert snap["assets"]["traces"]["group"] == "generation"
    assert "traces_schema" in snap["assets"]["traces"]["checks"]
    assert "traces_schema" in snap["assets"]["traces"]["partitioned_checks"]  # runs for one partition only
    generation = snap["jobs"]["generation_job"]
    assert generation["assets"] == sorted(a for a, v in snap["assets"].items() if v["group"] == "generation")
    assert not [c for c in generation["checks"] if ":source_" in c]  # dbt source tests run with the metrics
    assert snap["jobs"]["approval_job"]["ops"] == ["approve_prompt"]
