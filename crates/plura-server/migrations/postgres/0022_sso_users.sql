-- People who sign in through the company's identity provider (OpenID Connect) are users too,
-- keyed by the provider and its subject id, never by name: a local user and a person of the
-- provider are never the same user. They have no password here (an empty hash, never checked).
ALTER TABLE users ADD COLUMN sso_issuer TEXT;
ALTER TABLE users ADD COLUMN sso_subject TEXT;
CREATE UNIQUE INDEX users_by_sso_identity ON users (sso_issuer, sso_subject);
