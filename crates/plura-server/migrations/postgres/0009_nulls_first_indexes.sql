-- The list sorts nulls first ascending (and so last descending), as SQLite does; PostgreSQL's
-- indexes put them last unless told, and then cannot serve the order: a million agents were
-- sorted instead of read in order. The status filter sorted by last seen gets an index too.
DROP INDEX agents_by_last_seen;
CREATE INDEX agents_by_last_seen ON agents (last_seen_at NULLS FIRST, id);
DROP INDEX agents_liveness;
CREATE INDEX agents_liveness ON agents (status, last_seen_at NULLS FIRST, id);
DROP INDEX agents_group;
CREATE INDEX agents_group ON agents (group_name NULLS FIRST, id);
