-- Sign-ins are not tokens: a session belongs to its user, takes the user's role as it is now,
-- and ends when the user is disabled or deleted.
CREATE TABLE sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX sessions_by_user ON sessions (user_id);
-- Until now a sign-in was a token with an expiry, named after its user.
INSERT INTO sessions (user_id, token_hash, created_at, expires_at)
    SELECT users.id, api_tokens.token_hash, api_tokens.created_at, api_tokens.expires_at
    FROM api_tokens JOIN users ON users.name = api_tokens.name
    WHERE api_tokens.expires_at IS NOT NULL;
DELETE FROM api_tokens WHERE expires_at IS NOT NULL;

-- A token is revoked by its name: names become unique; older tokens that shared one keep it
-- with their id added (" #12"), as `token list` shows.
UPDATE api_tokens SET name = name || ' #' || id
    WHERE id NOT IN (SELECT min(id) FROM api_tokens GROUP BY name);
CREATE UNIQUE INDEX api_tokens_by_name ON api_tokens (name);
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;

ALTER TABLE users ADD COLUMN disabled_at INTEGER;
