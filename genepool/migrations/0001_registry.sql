-- genepool registry schema, version 1.
-- Everything lives in schema "genepool". Migrations are applied in order, once each,
-- inside a transaction, and recorded in genepool.schema_migrations.

CREATE TABLE IF NOT EXISTS genepool.agents (
    agent_type      text PRIMARY KEY,
    description     text NOT NULL DEFAULT '',
    benchmark_path  text,
    config          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per optimisation generation (= one Dagster partition) of one agent type.
CREATE TABLE IF NOT EXISTS genepool.experiments (
    id              text PRIMARY KEY,               -- e.g. 'support-desk/g0001'
    agent_type      text NOT NULL,
    generation      integer NOT NULL,
    kind            text NOT NULL DEFAULT 'generation',
    seed            bigint NOT NULL,
    config          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_type, generation, kind)
);

-- The gene pool. Rows are immutable: a trigger refuses UPDATE, DELETE and TRUNCATE.
CREATE TABLE IF NOT EXISTS genepool.prompts (
    id              text PRIMARY KEY,               -- 'pr_' + first 16 hex of sha256(agent_type, content, genome)
    agent_type      text NOT NULL,
    version         text NOT NULL,                  -- semver, e.g. '1.3.0'
    content         text NOT NULL,                  -- Jinja2 template of the system message
    genome          jsonb NOT NULL,                 -- structured genome (instructions, examples, params)
    parent_ids      text[] NOT NULL DEFAULT '{}',
    experiment_id   text REFERENCES genepool.experiments(id),
    generation      integer NOT NULL DEFAULT 0,
    operator        text NOT NULL DEFAULT 'seed',   -- how it was made: seed, add_instruction, crossover, reflect, ...
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (agent_type, version)
);
CREATE INDEX IF NOT EXISTS prompts_agent_idx ON genepool.prompts (agent_type, created_at);

-- Append-only lifecycle / label events. The current state of a prompt is its latest event.
CREATE TABLE IF NOT EXISTS genepool.prompt_events (
    id              bigserial PRIMARY KEY,
    prompt_id       text NOT NULL REFERENCES genepool.prompts(id),
    agent_type      text NOT NULL,
    label           text NOT NULL CHECK (label IN
                      ('draft', 'experimental', 'candidate', 'production', 'archived', 'rejected')),
    actor           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS prompt_events_prompt_idx ON genepool.prompt_events (prompt_id, id);
CREATE INDEX IF NOT EXISTS prompt_events_agent_idx ON genepool.prompt_events (agent_type, label, id);

-- Per-item results of running one prompt on one benchmark item inside an experiment.
CREATE TABLE IF NOT EXISTS genepool.experiment_results (
    experiment_id     text NOT NULL REFERENCES genepool.experiments(id),
    prompt_id         text NOT NULL REFERENCES genepool.prompts(id),
    item_id           text NOT NULL,
    split             text NOT NULL,               -- train | validation | test
    role              text NOT NULL,               -- target | control | validation | test | trace
    success           boolean NOT NULL,
    score             double precision NOT NULL,
    output            text NOT NULL,
    checker_message   text NOT NULL DEFAULT '',
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    latency_ms        double precision NOT NULL,
    cost_usd          double precision NOT NULL DEFAULT 0,
    cached            boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, prompt_id, item_id, role)
);

-- Execution traces of agents (from the runner, PostgreSQL, Langfuse or OTel GenAI JSON).
CREATE TABLE IF NOT EXISTS genepool.traces (
    id                text PRIMARY KEY,
    agent_type        text NOT NULL,
    prompt_id         text,
    prompt_version    text,
    partition_key     text,
    source            text NOT NULL DEFAULT 'runner',
    item_id           text,
    input             text NOT NULL,
    output            text NOT NULL,
    expected          text,
    success           boolean NOT NULL,
    checker_message   text NOT NULL DEFAULT '',
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    latency_ms        double precision NOT NULL DEFAULT 0,
    tool_calls        jsonb NOT NULL DEFAULT '[]'::jsonb,
    error             text,
    metadata          jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS traces_agent_idx ON genepool.traces (agent_type, created_at);

-- Trace rows that failed validation, kept with the reason instead of being dropped.
CREATE TABLE IF NOT EXISTS genepool.trace_quarantine (
    id              bigserial PRIMARY KEY,
    source          text NOT NULL,
    partition_key   text,
    raw             jsonb NOT NULL,
    reason          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- LLM response cache keyed by sha256 of (provider, model, messages, params).
CREATE TABLE IF NOT EXISTS genepool.llm_cache (
    request_hash      text PRIMARY KEY,
    provider          text NOT NULL,
    model             text NOT NULL,
    request           jsonb NOT NULL,
    response          text NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    latency_ms        double precision NOT NULL,
    cost_usd          double precision NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- Every LLM request made through the LLM resource, served from cache or not.
CREATE TABLE IF NOT EXISTS genepool.llm_calls (
    id                bigserial PRIMARY KEY,
    request_hash      text NOT NULL,
    provider          text NOT NULL,
    model             text NOT NULL,
    purpose           text NOT NULL DEFAULT '',
    partition_key     text,
    cached            boolean NOT NULL,
    prompt_tokens     integer NOT NULL,
    completion_tokens integer NOT NULL,
    latency_ms        double precision NOT NULL,   -- latency of the original (uncached) call
    wall_ms           double precision NOT NULL,   -- time this request actually took
    cost_usd          double precision NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS llm_calls_partition_idx ON genepool.llm_calls (partition_key);

-- Children of a generation, valid or not: a broken one is kept with the reason it was rejected.
CREATE TABLE IF NOT EXISTS genepool.candidates (
    experiment_id   text NOT NULL REFERENCES genepool.experiments(id),
    prompt_id       text REFERENCES genepool.prompts(id),
    position        integer NOT NULL,
    operator        text NOT NULL,
    parent_ids      text[] NOT NULL DEFAULT '{}',
    genome          jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, position)
);

-- Generation summaries: the Pareto front and spend, one row per (experiment, prompt) on the front.
CREATE TABLE IF NOT EXISTS genepool.front_members (
    experiment_id     text NOT NULL REFERENCES genepool.experiments(id),
    prompt_id         text NOT NULL REFERENCES genepool.prompts(id),
    rank              integer NOT NULL,
    success_rate      double precision NOT NULL,
    avg_tokens        double precision NOT NULL,
    avg_latency_ms    double precision NOT NULL,
    control_regressions integer NOT NULL DEFAULT 0,
    feasible          boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_id, prompt_id)
);

CREATE OR REPLACE FUNCTION genepool.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'genepool.% is append-only: % is not allowed (register a new version or append an event instead)',
        TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

DROP TRIGGER IF EXISTS prompts_immutable ON genepool.prompts;
CREATE TRIGGER prompts_immutable BEFORE UPDATE OR DELETE ON genepool.prompts
    FOR EACH ROW EXECUTE FUNCTION genepool.refuse_change();
DROP TRIGGER IF EXISTS prompts_no_truncate ON genepool.prompts;
CREATE TRIGGER prompts_no_truncate BEFORE TRUNCATE ON genepool.prompts
    FOR EACH STATEMENT EXECUTE FUNCTION genepool.refuse_change();
DROP TRIGGER IF EXISTS prompt_events_append_only ON genepool.prompt_events;
CREATE TRIGGER prompt_events_append_only BEFORE UPDATE OR DELETE ON genepool.prompt_events
    FOR EACH ROW EXECUTE FUNCTION genepool.refuse_change();
DROP TRIGGER IF EXISTS prompt_events_no_truncate ON genepool.prompt_events;
CREATE TRIGGER prompt_events_no_truncate BEFORE TRUNCATE ON genepool.prompt_events
    FOR EACH STATEMENT EXECUTE FUNCTION genepool.refuse_change();

-- Current state of every prompt, derived from its latest event.
CREATE OR REPLACE VIEW genepool.prompt_state AS
SELECT p.id AS prompt_id, p.agent_type, p.version, p.generation, p.operator, p.created_at,
       e.label AS state, e.actor, e.reason, e.created_at AS state_since
FROM genepool.prompts p
LEFT JOIN LATERAL (
    SELECT label, actor, reason, created_at FROM genepool.prompt_events pe
    WHERE pe.prompt_id = p.id ORDER BY pe.id DESC LIMIT 1
) e ON true;
