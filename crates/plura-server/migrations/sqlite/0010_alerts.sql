-- Alerts by webhook (see alerts/): `lost` marks an agent stopped without a goodbye, so its
-- return is news; `alerts` is the outbox each change writes in its own transaction; the server
-- that leads turns it into one delivery per webhook, retried until a 2xx or a day has passed.
ALTER TABLE agents ADD COLUMN lost INTEGER NOT NULL DEFAULT 0;

CREATE TABLE webhooks (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    url        TEXT    NOT NULL,
    format     TEXT    NOT NULL,
    -- The HMAC key itself: signing needs it (the file is its owner's only).
    secret     TEXT    NOT NULL,
    origin     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (url, format)
);

CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    kind           TEXT    NOT NULL,
    -- The agent as it was (JSON), so an alert outlives a delete.
    agent          TEXT    NOT NULL,
    detail         TEXT    NOT NULL,
    holder_running INTEGER,
    dispatched     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX alerts_waiting ON alerts (id) WHERE dispatched = 0;

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event           TEXT    NOT NULL,
    count           INTEGER NOT NULL,
    text            TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    last_attempt_at INTEGER,
    next_attempt_at INTEGER,
    last_error      TEXT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id);
