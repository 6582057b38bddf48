-- Searches are answered from the agents the server keeps in memory (store/sql/agent_index.rs),
-- and by a scan while it loads: the trigram index no longer earns what its triggers cost every
-- registration (a quarter of the login path's time in SQLite).
DROP TRIGGER agents_text_in;
DROP TRIGGER agents_text_out;
DROP TRIGGER agents_text_changed;
DROP TABLE agents_text;
