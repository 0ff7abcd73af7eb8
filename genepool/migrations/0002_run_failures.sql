-- Failed Dagster runs, recorded by the run_failure_recorder sensor so a generation can be re-run.
CREATE TABLE IF NOT EXISTS genepool.run_failures (
    run_id          text PRIMARY KEY,
    job_name        text NOT NULL,
    partition_key   text,                           -- e.g. 'support-desk/g0003' (= experiment id)
    agent_type      text,
    error           text NOT NULL,                  -- run failure message and failed steps' errors
    failed_steps    text[] NOT NULL DEFAULT '{}',
    failed_at       timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS run_failures_partition_idx ON genepool.run_failures (partition_key, failed_at);
