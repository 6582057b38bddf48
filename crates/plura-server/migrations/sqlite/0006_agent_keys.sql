-- Each agent's own key, issued at login: only its SHA-256 (hex) is stored. NULL until the agent
-- first logs in (registered by hand), and no key matches NULL.
ALTER TABLE agents ADD COLUMN key_hash TEXT;
