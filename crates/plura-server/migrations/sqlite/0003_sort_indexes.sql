-- The console sorts the list by these; with 100k agents a sort without an index costs a scan.
-- The id ends each index, as it ends each ORDER BY (stable pages).
CREATE INDEX agents_by_ip ON agents (ip_key, id);
CREATE INDEX agents_by_hostname ON agents (hostname, id);
CREATE INDEX agents_by_last_seen ON agents (last_seen_at, id);
