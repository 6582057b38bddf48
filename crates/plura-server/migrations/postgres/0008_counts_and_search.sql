-- The console's summary from counts kept up to date by triggers, not from scans of the fleet.
-- Several servers write at once, so the counts are deltas that are only ever inserted (no row
-- is fought over), one per (dimension, value) a statement changed; the server that sweeps sums
-- them up now and then. '' stands for no group.
CREATE TABLE agent_counts (
    dimension TEXT   NOT NULL,
    value     TEXT   NOT NULL,
    n         BIGINT NOT NULL
);
CREATE INDEX agent_counts_by_key ON agent_counts (dimension, value);
INSERT INTO agent_counts (dimension, value, n)
    SELECT 'status', status, COUNT(*) FROM agents GROUP BY status
    UNION ALL SELECT 'enabled', enabled::text, COUNT(*) FROM agents GROUP BY enabled
    UNION ALL SELECT 'kind', kind, COUNT(*) FROM agents GROUP BY kind
    UNION ALL SELECT 'os', os, COUNT(*) FROM agents GROUP BY os
    UNION ALL SELECT 'group', COALESCE(group_name, ''), COUNT(*) FROM agents GROUP BY group_name;

-- The dimensions an agent is counted in.
CREATE FUNCTION plura_counted(agent agents) RETURNS TABLE (dimension TEXT, value TEXT)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('status', agent.status), ('enabled', agent.enabled::text), ('kind', agent.kind),
           ('os', agent.os), ('group', COALESCE(agent.group_name, ''))
$$;

-- One delta per (dimension, value) the statement changed; none for statements that change no
-- counted column (the batched last-seen writes).
CREATE FUNCTION plura_count_agents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO agent_counts (dimension, value, n)
        SELECT d.dimension, d.value, COUNT(*) FROM new_rows a, plura_counted(a) d
        GROUP BY d.dimension, d.value;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO agent_counts (dimension, value, n)
        SELECT d.dimension, d.value, -COUNT(*) FROM old_rows a, plura_counted(a) d
        GROUP BY d.dimension, d.value;
    ELSE
        INSERT INTO agent_counts (dimension, value, n)
        SELECT c.dimension, c.value, SUM(c.sign)
        FROM (SELECT d.dimension, d.value, -1 AS sign FROM old_rows a, plura_counted(a) d
              UNION ALL
              SELECT d.dimension, d.value, 1 FROM new_rows a, plura_counted(a) d) c
        GROUP BY c.dimension, c.value
        HAVING SUM(c.sign) <> 0;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER agents_counted_in AFTER INSERT ON agents
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION plura_count_agents();
CREATE TRIGGER agents_counted_out AFTER DELETE ON agents
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION plura_count_agents();
CREATE TRIGGER agents_counted_changed AFTER UPDATE ON agents
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION plura_count_agents();

-- Free-text search by substring: the searched columns of each agent as one lower-cased text, in
-- a table of its own with a trigram index (pg_trgm). Kept apart from the agents so that writing
-- last-seen times, which touches every index of the agents, never touches this one; a trigger
-- rewrites an agent's text only when a searched column changes.
CREATE TABLE agent_texts (
    agent_id BIGINT PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    text     TEXT NOT NULL
);

CREATE FUNCTION plura_agent_text(agent agents) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT LOWER(agent.ip || ' ' || agent.hostname || ' ' || COALESCE(agent.group_name, '')
        || ' ' || agent.os || ' ' || agent.version || ' ' || COALESCE(agent.machine_id, ''))
$$;

INSERT INTO agent_texts (agent_id, text) SELECT a.id, plura_agent_text(a) FROM agents a;

CREATE FUNCTION plura_write_agent_text() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agent_texts (agent_id, text) VALUES (NEW.id, plura_agent_text(NEW))
    ON CONFLICT (agent_id) DO UPDATE SET text = EXCLUDED.text;
    RETURN NULL;
END $$;

CREATE TRIGGER agents_text_in AFTER INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION plura_write_agent_text();
CREATE TRIGGER agents_text_changed AFTER UPDATE OF ip, hostname, group_name, os, version,
    machine_id ON agents FOR EACH ROW
    WHEN (plura_agent_text(OLD) IS DISTINCT FROM plura_agent_text(NEW))
    EXECUTE FUNCTION plura_write_agent_text();

-- Where the database's owner may not create the extension, search still works, by scanning.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'pg_trgm is not available (%): free-text search will scan', SQLERRM;
END $$;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX agent_texts_trigrams ON agent_texts USING gin (text gin_trgm_ops);
    END IF;
END $$;
