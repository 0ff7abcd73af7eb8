"""Materialise some generation steps of one partition in this process: a stand-in for "one machine".

    python tests/scale/step.py --db-url URL --llm-url URL --partition support-desk/g0001 \
        --select traces [--select failure_clusters] --io postgres|filesystem --storage DIR

The scale test runs it twice, each time in its own mount namespace with a private tmpfs over ``--storage``
(``unshare -m``): the second process re-executes a downstream step and must load the first one's output.
Prints one JSON line: {"success": bool, "error": "..."}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db-url", required=True)
    p.add_argument("--llm-url", required=True)
    p.add_argument("--partition", required=True)
    p.add_argument("--select", action="append", required=True)
    p.add_argument("--io", choices=["postgres", "filesystem"], required=True)
    p.add_argument("--storage", required=True, help="this machine's local folder (DAGSTER_HOME storage)")
    p.add_argument("--optimizer", default="{}")
    a = p.parse_args()

    import dagster as dg

    from assets.partitions import add_partitions, dagster_key_of
    from orchestration import definitions as d
    from resources import LLMResource, OptimizerResource, PostgresIOManager, PostgresResource
    from resources.langfuse import LangfuseResource

    llm = LLMResource(provider="openai_compatible", base_url=a.llm_url, model="stub")
    io = (PostgresIOManager(database_url=a.db_url) if a.io == "postgres"
          else dg.FilesystemIOManager(base_dir=os.path.join(a.storage, "storage")))
    resources = {
        "postgres": PostgresResource(database_url=a.db_url),
        "llm": llm,
        "reflection_llm": llm,
        "optimizer": OptimizerResource(**json.loads(a.optimizer)),
        "langfuse": LangfuseResource(public_key_env="GENEPOOL_TEST_UNSET_LF_PK",
                                     secret_key_env="GENEPOOL_TEST_UNSET_LF_SK"),
        "io_manager": io,
    }
    with dg.DagsterInstance.ephemeral() as instance:
        add_partitions(instance, [a.partition])
        res = dg.materialize([*d.registry_assets, *d.generation_assets], instance=instance, resources=resources,
                             partition_key=dagster_key_of(a.partition), selection=a.select, raise_on_error=False)
        errors = []
        for e in res.all_events:
            err = e.event_specific_data.error if e.is_step_failure and e.event_specific_data else None
            chain = []
            while err is not None:  # the error and its causes, one line each
                chain.append(err.message.strip().splitlines()[-1] if err.message.strip() else err.cls_name or "")
                err = err.cause
            if chain:
                errors.append(" <- ".join(chain))
        print(json.dumps({"success": res.success, "error": errors[0] if errors else ""}), flush=True)


if __name__ == "__main__":
    main()
