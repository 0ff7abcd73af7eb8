-- The database defends the registry (issue 7, point 7), whatever client writes to it:
--   * a prompt's id is the hash of its agent type and canonical genome (as registry.prompt_id_for computes it),
--     its parents exist (same agent type), its created_at is the server's clock;
--   * lifecycle events follow the lifecycle (draft -> experimental -> candidate -> production -> archived,
--     rejected only before production, nothing after archived or rejected), and an agent never has more than
--     one production prompt after any event;
--   * prompts and prompt_events stay append-only (0001's triggers refuse UPDATE, DELETE and TRUNCATE).
-- The app connects as a role with SELECT and INSERT only on these two tables (granted by genepool.db.migrate),
-- so it can neither disable these triggers nor bypass them.
-- Every function pins search_path, so a caller's search_path cannot swap sha256(), encode() or an operator.

-- The exact text the id was hashed from: Python's json.dumps(sort_keys, separators=(',', ':'),
-- ensure_ascii=False), which jsonb's own text form cannot reproduce (different key order and spacing).
-- Rows written before this migration keep NULL here; the registry re-checks every row's id when it reads it.
ALTER TABLE genepool.prompts ADD COLUMN IF NOT EXISTS genome_canonical text;

CREATE OR REPLACE FUNCTION genepool.prompt_id_of(agent_type text, genome_canonical text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT 'pr_' || left(encode(sha256(convert_to(agent_type || E'\n' || genome_canonical, 'UTF8')), 'hex'), 16)
$$;

CREATE OR REPLACE FUNCTION genepool.check_prompt_insert() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expected text;
    missing text;
BEGIN
    IF NEW.genome_canonical IS NULL THEN
        RAISE EXCEPTION 'genepool.prompts: genome_canonical is required (the canonical JSON the id % is hashed from)',
            NEW.id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.genome_canonical::jsonb IS DISTINCT FROM NEW.genome THEN
        RAISE EXCEPTION 'genepool.prompts: genome of prompt % differs from its genome_canonical text', NEW.id
            USING ERRCODE = 'check_violation';
    END IF;
    expected := genepool.prompt_id_of(NEW.agent_type, NEW.genome_canonical);
    IF NEW.id IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'genepool.prompts: id % is not the hash of its agent type and genome (expected %)',
            NEW.id, expected USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(quote_literal(p), ', ') INTO missing
    FROM unnest(NEW.parent_ids) AS p
    WHERE NOT EXISTS (SELECT 1 FROM genepool.prompts q WHERE q.id = p AND q.agent_type = NEW.agent_type);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'genepool.prompts: parent(s) % of prompt % are not prompts of agent %',
            missing, NEW.id, quote_literal(NEW.agent_type) USING ERRCODE = 'foreign_key_violation';
    END IF;
    NEW.created_at := now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS prompts_checked ON genepool.prompts;
CREATE TRIGGER prompts_checked BEFORE INSERT ON genepool.prompts
    FOR EACH ROW EXECUTE FUNCTION genepool.check_prompt_insert();

-- The lifecycle, the same table as genepool.registry.transition_allowed (a test compares both).
CREATE OR REPLACE FUNCTION genepool.lifecycle_move_allowed(from_state text, to_state text) RETURNS boolean
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN to_state = 'rejected' THEN coalesce(from_state IN ('draft', 'experimental', 'candidate'), false)
        WHEN to_state = 'archived' THEN coalesce(from_state = 'production', false)
        WHEN from_state IS NULL THEN to_state IN ('draft', 'experimental', 'candidate')
        WHEN from_state NOT IN ('draft', 'experimental', 'candidate') THEN false
        ELSE coalesce(
            array_position(ARRAY['draft', 'experimental', 'candidate', 'production'], to_state)
            > array_position(ARRAY['draft', 'experimental', 'candidate', 'production'], from_state), false)
    END
$$;

CREATE OR REPLACE FUNCTION genepool.check_prompt_event() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    prompt_agent text;
    current_state text;
    others text;
BEGIN
    -- The state is re-read under the lock, so the check needs a fresh snapshot per statement.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'genepool.prompt_events: lifecycle events are written in READ COMMITTED transactions only'
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT p.agent_type INTO prompt_agent FROM genepool.prompts p WHERE p.id = NEW.prompt_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'genepool.prompt_events: no prompt %', quote_literal(NEW.prompt_id)
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF NEW.agent_type IS DISTINCT FROM prompt_agent THEN
        RAISE EXCEPTION 'genepool.prompt_events: prompt % belongs to agent %, not %',
            NEW.prompt_id, quote_literal(prompt_agent), quote_literal(NEW.agent_type)
            USING ERRCODE = 'check_violation';
    END IF;
    -- One writer per agent at a time (the registry takes the same lock), then ids and times in lock order,
    -- so "the latest event" (highest id) is the last one committed.
    PERFORM pg_advisory_xact_lock(hashtext(NEW.agent_type));
    NEW.id := nextval(pg_get_serial_sequence('genepool.prompt_events', 'id'));
    NEW.created_at := clock_timestamp();
    SELECT e.label INTO current_state FROM genepool.prompt_events e
    WHERE e.prompt_id = NEW.prompt_id ORDER BY e.id DESC LIMIT 1;
    IF NOT genepool.lifecycle_move_allowed(current_state, NEW.label) THEN
        RAISE EXCEPTION 'genepool.prompt_events: prompt % cannot move from % to %', NEW.prompt_id,
            coalesce(current_state, '(no state)'), NEW.label USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.label = 'production' THEN
        IF btrim(NEW.actor) = '' THEN
            RAISE EXCEPTION 'genepool.prompt_events: a production event needs an actor (the approver)'
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT string_agg(p.id, ', ') INTO others
        FROM genepool.prompts p
        WHERE p.agent_type = NEW.agent_type AND p.id <> NEW.prompt_id
          AND (SELECT e.label FROM genepool.prompt_events e WHERE e.prompt_id = p.id ORDER BY e.id DESC LIMIT 1)
              = 'production';
        IF others IS NOT NULL THEN
            RAISE EXCEPTION 'genepool.prompt_events: agent % already has production prompt %; archive it first', quote_literal(NEW.agent_type), others USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS prompt_events_checked ON genepool.prompt_events;
CREATE TRIGGER prompt_events_checked BEFORE INSERT ON genepool.prompt_events
    FOR EACH ROW EXECUTE FUNCTION genepool.check_prompt_event();
