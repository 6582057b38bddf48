-- The console's summary from counts kept up to date by triggers, not from scans of the fleet:
-- how many agents have each value of each dimension ('' stands for no group).
CREATE TABLE agent_counts (
    dimension TEXT    NOT NULL,
    value     TEXT    NOT NULL,
    n         INTEGER NOT NULL,
    PRIMARY KEY (dimension, value)
);
INSERT INTO agent_counts (dimension, value, n)
    SELECT 'status', status, COUNT(*) FROM agents GROUP BY status
    UNION ALL SELECT 'enabled', CAST(enabled AS TEXT), COUNT(*) FROM agents GROUP BY enabled
    UNION ALL SELECT 'kind', kind, COUNT(*) FROM agents GROUP BY kind
    UNION ALL SELECT 'os', os, COUNT(*) FROM agents GROUP BY os
    UNION ALL SELECT 'group', COALESCE(group_name, ''), COUNT(*) FROM agents GROUP BY group_name;

CREATE TRIGGER agents_counted_in AFTER INSERT ON agents BEGIN
    INSERT OR IGNORE INTO agent_counts (dimension, value, n) VALUES
        ('status', NEW.status, 0), ('enabled', CAST(NEW.enabled AS TEXT), 0),
        ('kind', NEW.kind, 0), ('os', NEW.os, 0), ('group', COALESCE(NEW.group_name, ''), 0);
    UPDATE agent_counts SET n = n + 1 WHERE
        (dimension = 'status' AND value = NEW.status)
        OR (dimension = 'enabled' AND value = CAST(NEW.enabled AS TEXT))
        OR (dimension = 'kind' AND value = NEW.kind)
        OR (dimension = 'os' AND value = NEW.os)
        OR (dimension = 'group' AND value = COALESCE(NEW.group_name, ''));
END;

CREATE TRIGGER agents_counted_out AFTER DELETE ON agents BEGIN
    UPDATE agent_counts SET n = n - 1 WHERE
        (dimension = 'status' AND value = OLD.status)
        OR (dimension = 'enabled' AND value = CAST(OLD.enabled AS TEXT))
        OR (dimension = 'kind' AND value = OLD.kind)
        OR (dimension = 'os' AND value = OLD.os)
        OR (dimension = 'group' AND value = COALESCE(OLD.group_name, ''));
END;

CREATE TRIGGER agents_counted_changed AFTER UPDATE OF status, enabled, kind, os, group_name
ON agents
WHEN OLD.status IS NOT NEW.status OR OLD.enabled IS NOT NEW.enabled OR OLD.kind IS NOT NEW.kind
    OR OLD.os IS NOT NEW.os OR OLD.group_name IS NOT NEW.group_name
BEGIN
    UPDATE agent_counts SET n = n - 1 WHERE
        (dimension = 'status' AND value = OLD.status)
        OR (dimension = 'enabled' AND value = CAST(OLD.enabled AS TEXT))
        OR (dimension = 'kind' AND value = OLD.kind)
        OR (dimension = 'os' AND value = OLD.os)
        OR (dimension = 'group' AND value = COALESCE(OLD.group_name, ''));
    INSERT OR IGNORE INTO agent_counts (dimension, value, n) VALUES
        ('status', NEW.status, 0), ('enabled', CAST(NEW.enabled AS TEXT), 0),
        ('kind', NEW.kind, 0), ('os', NEW.os, 0), ('group', COALESCE(NEW.group_name, ''), 0);
    UPDATE agent_counts SET n = n + 1 WHERE
        (dimension = 'status' AND value = NEW.status)
        OR (dimension = 'enabled' AND value = CAST(NEW.enabled AS TEXT))
        OR (dimension = 'kind' AND value = NEW.kind)
        OR (dimension = 'os' AND value = NEW.os)
        OR (dimension = 'group' AND value = COALESCE(NEW.group_name, ''));
END;

-- Free-text search by substring: a trigram index over the searched columns, kept in step with
-- the agents by triggers (an external-content FTS5 table holds only the index).
CREATE VIRTUAL TABLE agents_text USING fts5(
    ip, hostname, group_name, os, version, machine_id,
    content = 'agents', content_rowid = 'id', tokenize = 'trigram'
);
INSERT INTO agents_text (agents_text) VALUES ('rebuild');

CREATE TRIGGER agents_text_in AFTER INSERT ON agents BEGIN
    INSERT INTO agents_text (rowid, ip, hostname, group_name, os, version, machine_id)
    VALUES (NEW.id, NEW.ip, NEW.hostname, NEW.group_name, NEW.os, NEW.version, NEW.machine_id);
END;

CREATE TRIGGER agents_text_out AFTER DELETE ON agents BEGIN
    INSERT INTO agents_text (agents_text, rowid, ip, hostname, group_name, os, version, machine_id)
    VALUES ('delete', OLD.id, OLD.ip, OLD.hostname, OLD.group_name, OLD.os, OLD.version,
            OLD.machine_id);
END;

CREATE TRIGGER agents_text_changed AFTER UPDATE OF ip, hostname, group_name, os, version,
    machine_id ON agents
WHEN OLD.ip IS NOT NEW.ip OR OLD.hostname IS NOT NEW.hostname
    OR OLD.group_name IS NOT NEW.group_name OR OLD.os IS NOT NEW.os
    OR OLD.version IS NOT NEW.version OR OLD.machine_id IS NOT NEW.machine_id
BEGIN
    INSERT INTO agents_text (agents_text, rowid, ip, hostname, group_name, os, version, machine_id)
    VALUES ('delete', OLD.id, OLD.ip, OLD.hostname, OLD.group_name, OLD.os, OLD.version,
            OLD.machine_id);
    INSERT INTO agents_text (rowid, ip, hostname, group_name, os, version, machine_id)
    VALUES (NEW.id, NEW.ip, NEW.hostname, NEW.group_name, NEW.os, NEW.version, NEW.machine_id);
END;
