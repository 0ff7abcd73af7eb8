-- Honest re-runs, atomic spend, a daily USD cap that holds across concurrent runs.

-- What determines a generation (settings, task model, benchmark, seed): a re-run with the same
-- fingerprint resumes, a re-run with another one is refused (see genepool/steps/context.py).
ALTER TABLE genepool.experiments ADD COLUMN IF NOT EXISTS fingerprint text;
ALTER TABLE genepool.experiments ADD COLUMN IF NOT EXISTS fingerprint_parts jsonb;
ALTER TABLE genepool.experiments ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;
ALTER TABLE genepool.experiments ADD COLUMN IF NOT EXISTS finished_at timestamptz;

-- generation_spend: rollouts and tokens are the step's work (reset when the step starts again, so a
-- re-run counts once); usd and llm_calls add up every attempt (genepool.store.generation_spend reads money
-- from the ledger genepool.llm_calls, which is written with each call).
COMMENT ON COLUMN genepool.generation_spend.usd IS 'USD of uncached calls of every attempt of the step (only added to)';
COMMENT ON COLUMN genepool.generation_spend.llm_calls IS 'uncached LLM calls of every attempt of the step (only added to)';

-- A quarantined row is stored once per (source, partition, raw row, reason), however often it is re-run.
ALTER TABLE genepool.trace_quarantine
    ADD COLUMN IF NOT EXISTS raw_hash text GENERATED ALWAYS AS (md5(raw::text)) STORED;
DELETE FROM genepool.trace_quarantine q USING genepool.trace_quarantine k
    WHERE q.source = k.source AND coalesce(q.partition_key, '') = coalesce(k.partition_key, '')
      AND q.raw_hash = k.raw_hash AND q.reason = k.reason AND q.id > k.id;
CREATE UNIQUE INDEX IF NOT EXISTS trace_quarantine_once
    ON genepool.trace_quarantine (source, coalesce(partition_key, ''), raw_hash, md5(reason));

-- USD a call may cost at most, reserved while it runs, so concurrent runs cannot both pass the daily
-- cap with the same headroom. A reservation older than 15 minutes (a crashed run) no longer counts.
CREATE TABLE IF NOT EXISTS genepool.usd_reservations (
    id              bigserial PRIMARY KEY,
    partition_key   text,
    usd             double precision NOT NULL CHECK (usd >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS llm_calls_created_idx ON genepool.llm_calls (created_at);
