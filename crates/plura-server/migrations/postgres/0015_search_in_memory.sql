-- Searches are answered from the agents each server keeps in memory (store/sql/agent_index.rs),
-- and by a scan while it loads: the trigger-kept search text and its trigram index no longer
-- earn what they cost every registration (a row-level trigger and a GIN insert per agent: about
-- a quarter of PostgreSQL's time in the login bench).
DROP TRIGGER agents_text_in ON agents;
DROP TRIGGER agents_text_changed ON agents;
DROP FUNCTION plura_write_agent_text();
DROP TABLE agent_texts;
DROP FUNCTION plura_agent_text(agents);
