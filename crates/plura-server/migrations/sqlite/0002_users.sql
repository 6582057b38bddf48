-- People who sign in to the console with a name and password. Only an Argon2 hash is stored.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

-- A sign-in mints a role token that expires; tokens made by the CLI do not (NULL).
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
