-- Step outputs of the Dagster code location (resources/io_manager.py): one row per asset and partition,
-- so any machine can load the inputs of any step. '' is the partition of an unpartitioned asset.
CREATE TABLE IF NOT EXISTS genepool.io_outputs (
    asset_key     text        NOT NULL,
    partition_key text        NOT NULL DEFAULT '',
    format        text        NOT NULL CHECK (format IN ('json', 'pickle')),
    data          bytea       NOT NULL,
    run_id        text,
    stored_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (asset_key, partition_key)
);
