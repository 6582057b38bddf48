-- The audit log records changes that concern no agent too (tokens, users, the enrollment token,
-- webhooks): the agent columns may be empty. SQLite cannot drop a NOT NULL: the table is rebuilt.
CREATE TABLE audit_log_new (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    agent_id INTEGER,
    ip       TEXT,
    hostname TEXT,
    detail   TEXT    NOT NULL DEFAULT ''
);
INSERT INTO audit_log_new (id, at, actor, action, agent_id, ip, hostname, detail)
    SELECT id, at, actor, action, agent_id, ip, hostname, detail FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_new RENAME TO audit_log;
CREATE INDEX audit_log_by_time ON audit_log (at);
