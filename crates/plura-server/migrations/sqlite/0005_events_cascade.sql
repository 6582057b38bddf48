-- History belongs to its agent: deleting the agent deletes its history (ON DELETE CASCADE), so
-- no delete has to remember to. SQLite cannot add a constraint to a table: it is rebuilt.
CREATE TABLE agent_events_new (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id INTEGER NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    event    TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);
INSERT INTO agent_events_new (id, agent_id, at, event, detail)
    SELECT id, agent_id, at, event, detail FROM agent_events
    WHERE agent_id IN (SELECT id FROM agents);
DROP TABLE agent_events;
ALTER TABLE agent_events_new RENAME TO agent_events;
CREATE INDEX agent_events_by_agent ON agent_events (agent_id, id);
CREATE INDEX agent_events_by_time ON agent_events (at);
