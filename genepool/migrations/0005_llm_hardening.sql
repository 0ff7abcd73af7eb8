-- LLM layer hardening: HTTP attempts per call, and a token bucket per (base_url, model) shared by every
-- process that calls the same provider (genepool.ratelimit; one atomic UPDATE ... RETURNING per charge).
ALTER TABLE genepool.llm_calls ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 1;

CREATE TABLE IF NOT EXISTS genepool.llm_rate_buckets (
    bucket      text PRIMARY KEY,                        -- '<normalised base_url>|<model>'
    req_level   double precision NOT NULL,               -- requests available now (refills at rpm/60 per s)
    tok_level   double precision NOT NULL,               -- tokens available now (refills at tpm/60 per s)
    granted     boolean NOT NULL DEFAULT true,           -- outcome of the last charge
    requests    bigint NOT NULL DEFAULT 0,               -- requests granted so far
    updated_at  timestamptz NOT NULL DEFAULT statement_timestamp()
);
