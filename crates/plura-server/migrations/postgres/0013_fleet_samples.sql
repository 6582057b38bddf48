-- The fleet's counts, sampled by the server that sweeps (once a minute), for the chart of the
-- fleet over time. Kept 30 days.
CREATE TABLE fleet_samples (
    at      BIGINT PRIMARY KEY,
    running BIGINT NOT NULL,
    stopped BIGINT NOT NULL,
    unknown BIGINT NOT NULL
);
