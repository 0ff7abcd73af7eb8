"""Step outputs in PostgreSQL, so any machine can re-execute any step.

Dagster's default filesystem IO manager pickles each step's output under the local ``DAGSTER_HOME``: a
step re-executed on another machine cannot find its inputs. ``PostgresIOManager`` keeps them in
``genepool.io_outputs`` (migration 0007), one row per (asset key, partition): JSON when the value
round-trips through JSON unchanged (dicts and lists of plain values), else a pickle (DataFrames). The rows
are written by the code location only; the database is the trusted store every worker shares.
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import dagster as dg

from resources.postgres import PostgresResource, plain_url

TABLE = "genepool.io_outputs"


def encode(obj: Any) -> tuple[str, bytes]:
    """('json', utf-8 bytes) when ``obj`` survives a JSON round trip unchanged, else ('pickle', bytes)."""
    try:
        text = json.dumps(obj, allow_nan=False, sort_keys=False)
        if json.loads(text) == obj:
            return "json", text.encode()
    except (TypeError, ValueError):
        pass
    return "pickle", pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def decode(fmt: str, data: bytes, where: str) -> Any:
    if fmt == "json":
        return json.loads(bytes(data).decode())
    if fmt == "pickle":
        return pickle.loads(bytes(data))  # written by this code location into the shared database
    raise ValueError(f"{TABLE} row {where} has format {fmt!r}; expected 'json' or 'pickle'")


class PostgresIOManager(dg.ConfigurableIOManager):
    """Asset outputs keyed by asset key and partition in ``genepool.io_outputs`` (GENEPOOL_DATABASE_URL, else
    the embedded server). A re-materialisation replaces the partition's row."""

    database_url: str | None = None

    def _db(self):
        url = plain_url(self.database_url) or os.environ.get("GENEPOOL_DATABASE_URL")
        return PostgresResource(database_url=url).database()

    @staticmethod
    def _asset(context: dg.OutputContext | dg.InputContext) -> str:
        if not context.has_asset_key:
            raise dg.Failure(
                "PostgresIOManager stores asset outputs only; give this op output an asset key or another IO manager"
            )
        return "/".join(context.asset_key.path)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:  # MaterializeResult assets (prompt_registry, benchmark) have no value to store
            return
        asset = self._asset(context)
        partition = context.asset_partition_key if context.has_asset_partitions else ""
        fmt, data = encode(obj)
        self._db().execute(
            f"INSERT INTO {TABLE} (asset_key, partition_key, format, data, run_id) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (asset_key, partition_key) DO UPDATE SET format = EXCLUDED.format, data = EXCLUDED.data,"
            " run_id = EXCLUDED.run_id, stored_at = now()",
            (asset, partition, fmt, data, context.run_id),
        )
        context.add_output_metadata({"io_format": fmt, "io_bytes": len(data)})

    def _load(self, asset: str, partition: str) -> Any:
        row = self._db().fetchone(
            f"SELECT format, data FROM {TABLE} WHERE asset_key = %s AND partition_key = %s", (asset, partition)
        )
        where = f"(asset {asset!r}, partition {partition or '(none)'!r})"
        if row is None:
            raise dg.Failure(
                f"no stored output for {where} in {TABLE}: materialise that step first (e.g. re-execute the whole "
                "run of this partition)"
            )
        return decode(row["format"], row["data"], where)

    def load_input(self, context: dg.InputContext) -> Any:
        asset = self._asset(context)
        if not context.has_asset_partitions:
            return self._load(asset, "")
        keys = list(context.asset_partition_keys)
        if len(keys) == 1:
            return self._load(asset, keys[0])
        return {k: self._load(asset, k) for k in keys}
