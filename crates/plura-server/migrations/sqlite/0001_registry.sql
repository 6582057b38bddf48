-- The agent registry. Times are Unix milliseconds (INTEGER) so both backends share every query.
CREATE TABLE agents (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ip            TEXT    NOT NULL,
    -- Sorts addresses numerically ("10.0.0.9" before "10.0.0.10"); see store::ip_sort_key.
    ip_key        TEXT    NOT NULL,
    hostname      TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    group_name    TEXT,
    kind          TEXT    NOT NULL DEFAULT '',
    os            TEXT    NOT NULL DEFAULT '',
    version       TEXT    NOT NULL DEFAULT '',
    machine_id    TEXT,
    source_ip     TEXT,
    registered_at INTEGER NOT NULL,
    last_login_at INTEGER,
    last_seen_at  INTEGER,
    UNIQUE (ip, hostname)
);
CREATE INDEX agents_liveness ON agents (status, last_seen_at);
CREATE INDEX agents_group ON agents (group_name);

CREATE TABLE agent_events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    event    TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX agent_events_by_agent ON agent_events (agent_id, id);

-- Outlives the agents it names: deletes and prunes are kept here.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    agent_id INTEGER NOT NULL,
    ip       TEXT    NOT NULL,
    hostname TEXT    NOT NULL,
    detail   TEXT    NOT NULL DEFAULT ''
);

-- Only the SHA-256 of a token is stored; the token itself is shown once, when it is made.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
