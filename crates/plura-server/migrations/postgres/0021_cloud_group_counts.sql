-- Each watched group's coverage as its last round found it: what /metrics shows, read without
-- looking up an agent per instance at every scrape.
ALTER TABLE cloud_groups ADD COLUMN instances INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cloud_groups ADD COLUMN covered INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cloud_groups ADD COLUMN uncovered INTEGER NOT NULL DEFAULT 0;
-- A digest of the instances the group's last round reported: a round that reports the same
-- ones (nearly every round) leaves them as they are without reading them.
ALTER TABLE cloud_groups ADD COLUMN digest TEXT;
