-- History belongs to its agent: deleting the agent deletes its history (ON DELETE CASCADE), so
-- no delete has to remember to.
DELETE FROM agent_events WHERE agent_id NOT IN (SELECT id FROM agents);
ALTER TABLE agent_events ADD CONSTRAINT agent_events_agent_fk
    FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE CASCADE;
