-- What `plura-eni watch` tells (see fleet/cloud.rs): the cloud's verdict on the instance of an
-- agent that stopped without a goodbye (kept only while `lost`: whatever clears `lost`
-- clears it), the live instances of each watched Auto Scaling group, and when a watch last
-- reported. A stop alert of an agent on EC2 waits for its verdict until `held_until`.
ALTER TABLE agents ADD COLUMN cloud_verdict TEXT;
ALTER TABLE agents ADD COLUMN cloud_verdict_at BIGINT;
CREATE INDEX agents_verdict ON agents (cloud_verdict, id) WHERE cloud_verdict IS NOT NULL;
CREATE INDEX agents_instance ON agents (instance_id) WHERE instance_id IS NOT NULL;
-- The agents a watch asks about each round.
CREATE INDEX agents_lost_on_instances ON agents (id) WHERE lost = 1 AND instance_id IS NOT NULL;

ALTER TABLE alerts ADD COLUMN agent_id BIGINT;
ALTER TABLE alerts ADD COLUMN held_until BIGINT;
CREATE INDEX alerts_held ON alerts (agent_id) WHERE held_until IS NOT NULL;

CREATE TABLE cloud_groups (
    asg         TEXT PRIMARY KEY,
    reported_at BIGINT NOT NULL
);

CREATE TABLE cloud_instances (
    asg         TEXT    NOT NULL REFERENCES cloud_groups (asg) ON DELETE CASCADE,
    instance_id TEXT    NOT NULL,
    zone        TEXT    NOT NULL,
    launched_at BIGINT NOT NULL,
    -- 1 once its `instances_without_agent` alert is recorded; 0 again once it is covered.
    alerted     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (asg, instance_id)
);
