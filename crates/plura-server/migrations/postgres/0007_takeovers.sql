-- When the identity was last taken over (a login from another source, machine or kind), so the
-- console can mark the row.
ALTER TABLE agents ADD COLUMN last_takeover_at BIGINT;
