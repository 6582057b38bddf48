-- The audit log records changes that concern no agent too (tokens, users, the enrollment token,
-- webhooks): the agent columns may be empty.
ALTER TABLE audit_log ALTER COLUMN agent_id DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN ip DROP NOT NULL;
ALTER TABLE audit_log ALTER COLUMN hostname DROP NOT NULL;
CREATE INDEX audit_log_by_time ON audit_log (at);
