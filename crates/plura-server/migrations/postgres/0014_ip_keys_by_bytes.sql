-- Addresses sort by their keys' bytes ("4:0a000009" before "4:0a00000a"), whatever collation the
-- database was made with: as on SQLite, and as each server keeps them in memory for deep pages.
ALTER TABLE agents ALTER COLUMN ip_key TYPE TEXT COLLATE "C";
