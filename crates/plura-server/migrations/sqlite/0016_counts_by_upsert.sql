-- The counts' triggers as one upsert per side of a change, not an insert-or-ignore and an update
-- whose ORs each look the counts up again: the insert trigger was a third of SQLite's work per
-- registration, and is half that now (measured in docs/decisions.md, "Counts kept by upserts").
DROP TRIGGER agents_counted_in;
DROP TRIGGER agents_counted_out;
DROP TRIGGER agents_counted_changed;

CREATE TRIGGER agents_counted_in AFTER INSERT ON agents BEGIN
    INSERT INTO agent_counts (dimension, value, n) VALUES
        ('status', NEW.status, 1), ('enabled', CAST(NEW.enabled AS TEXT), 1),
        ('kind', NEW.kind, 1), ('os', NEW.os, 1), ('group', COALESCE(NEW.group_name, ''), 1)
    ON CONFLICT (dimension, value) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER agents_counted_out AFTER DELETE ON agents BEGIN
    INSERT INTO agent_counts (dimension, value, n) VALUES
        ('status', OLD.status, -1), ('enabled', CAST(OLD.enabled AS TEXT), -1),
        ('kind', OLD.kind, -1), ('os', OLD.os, -1), ('group', COALESCE(OLD.group_name, ''), -1)
    ON CONFLICT (dimension, value) DO UPDATE SET n = n - 1;
END;

CREATE TRIGGER agents_counted_changed AFTER UPDATE OF status, enabled, kind, os, group_name
ON agents
WHEN OLD.status IS NOT NEW.status OR OLD.enabled IS NOT NEW.enabled OR OLD.kind IS NOT NEW.kind
    OR OLD.os IS NOT NEW.os OR OLD.group_name IS NOT NEW.group_name
BEGIN
    INSERT INTO agent_counts (dimension, value, n) VALUES
        ('status', OLD.status, -1), ('enabled', CAST(OLD.enabled AS TEXT), -1),
        ('kind', OLD.kind, -1), ('os', OLD.os, -1), ('group', COALESCE(OLD.group_name, ''), -1)
    ON CONFLICT (dimension, value) DO UPDATE SET n = n - 1;
    INSERT INTO agent_counts (dimension, value, n) VALUES
        ('status', NEW.status, 1), ('enabled', CAST(NEW.enabled AS TEXT), 1),
        ('kind', NEW.kind, 1), ('os', NEW.os, 1), ('group', COALESCE(NEW.group_name, ''), 1)
    ON CONFLICT (dimension, value) DO UPDATE SET n = n + 1;
END;
