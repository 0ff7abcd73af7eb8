"""Jobs, selected by asset group: one generation of one agent (a partition), the dbt metrics refresh,
and the human approval of a candidate. ``defs()`` is this area's part of the code location."""

# no `from __future__ import annotations`: Dagster reads the op's config annotation (ApprovalConfig) at runtime
import dagster as dg

from assets.common import GROUP
from assets.metrics import metrics_asset_selection
from assets.partitions import generations_partitions
from resources import PostgresResource
from resources.langfuse import LangfuseResource

# In-process: the steps share one loaded model and one database connection, so nearly all of a
# generation's wall time is spent in LLM calls rather than in starting step processes.
generation_job = dg.define_asset_job(
    "generation_job",
    # the whole "generation" group with its four partitioned Python checks (no dbt: the dbt source tests are
    # not checks, they run with the metrics); a UI "Materialize" of these assets runs the same steps and checks
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=generations_partitions,
    executor_def=dg.in_process_executor,
    description="One optimisation generation of one agent type (partition agent × generation, "
    "e.g. 'support-desk|g0001').",
)

metrics_job = dg.define_asset_job(
    "metrics_job", selection=metrics_asset_selection, description="dbt build of the metrics models and their tests."
)


class ApprovalConfig(dg.Config):
    prompt_id: str
    approver: str
    reason: str
    decision: str = "approve"  # or "reject"


@dg.op(description="A person approves (or rejects) a candidate prompt; approving archives the old production prompt.")
def approve_prompt(
    context: dg.OpExecutionContext, config: ApprovalConfig, postgres: PostgresResource, langfuse: LangfuseResource
) -> dict:
    from genepool import approval

    db = postgres.database()
    if config.decision == "approve":
        rec = approval.approve(
            db, config.prompt_id, config.approver, config.reason, langfuse=langfuse if langfuse.enabled else None
        )
    elif config.decision == "reject":
        rec = approval.reject(db, config.prompt_id, config.approver, config.reason)
    else:
        raise dg.Failure(f"decision={config.decision!r} is unknown; use 'approve' or 'reject'")
    context.log.info(f"{config.decision}: {rec.id} ({rec.agent_type} v{rec.version}) is now {rec.state}")
    context.add_output_metadata({"prompt_id": rec.id, "state": rec.state, "by": config.approver})
    # the decision changes the registry: record a materialisation of prompt_registry (production prompt,
    # candidates, lineage with approver and reason), so its page is never stale after an approval
    from assets.registry import registry_metadata

    meta = registry_metadata(db)
    meta["last_decision"] = dg.MetadataValue.text(
        f"{config.decision} {rec.id} ({rec.agent_type} v{rec.version}) by {config.approver}: {config.reason}"
    )
    context.log_event(dg.AssetMaterialization(asset_key="prompt_registry", metadata=meta))
    return {"prompt_id": rec.id, "state": rec.state}


@dg.job(description="Human approval: candidate -> production (config: prompt_id, approver, reason); records a new"
        " materialisation of prompt_registry.")
def approval_job():
    approve_prompt()


registry_job = dg.define_asset_job(
    "registry_job", selection=dg.AssetSelection.groups("registry"),
    description="The prompt registry (every agent has a production prompt) and the validated benchmarks.",
)


def defs() -> dg.Definitions:
    # the code location's default executor is in-process too: a UI "Materialize" of generation assets runs
    # its steps in one process like generation_job (not a process per step)
    return dg.Definitions(jobs=[generation_job, metrics_job, approval_job, registry_job],
                          executor=dg.in_process_executor)
