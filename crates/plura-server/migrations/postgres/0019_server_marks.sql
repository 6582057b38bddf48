-- What each server has written of what it heard: every heartbeat it heard before
-- `written_through` (milliseconds) is in the agents' last-seen times. The server that sweeps
-- judges silence only on time every live server has written, so a database outage, or a server
-- that could not write for a while, never looks like the agents' silence. `probed_at` is the
-- last time the server's readiness check wrote here.
CREATE TABLE server_marks (
    server_id TEXT PRIMARY KEY,
    written_through BIGINT NOT NULL DEFAULT 0,
    probed_at BIGINT NOT NULL DEFAULT 0
);
