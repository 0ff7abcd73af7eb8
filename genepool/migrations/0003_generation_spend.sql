-- Spend per generation step (rollouts, tokens, dollars), replaced when a step is re-run, so the
-- budget of a generation is the sum over its steps and a re-run never counts twice.
CREATE TABLE IF NOT EXISTS genepool.generation_spend (
    experiment_id   text NOT NULL REFERENCES genepool.experiments(id),
    step            text NOT NULL,
    rollouts        integer NOT NULL DEFAULT 0,
    tokens          bigint NOT NULL DEFAULT 0,
    usd             double precision NOT NULL DEFAULT 0,
    llm_calls       integer NOT NULL DEFAULT 0,     -- uncached calls actually made by the last run
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, step)
);

-- Per-instance (GEPA-style) survivors are kept as parents even when not on the NSGA-II front.
ALTER TABLE genepool.front_members ADD COLUMN IF NOT EXISTS on_front boolean NOT NULL DEFAULT true;
ALTER TABLE genepool.front_members ADD COLUMN IF NOT EXISTS survivor boolean NOT NULL DEFAULT false;
ALTER TABLE genepool.front_members ADD COLUMN IF NOT EXISTS screen_success double precision;
