-- Where each agent runs (from its IMDSv2 at login), filtered on by zone and Auto Scaling group.
ALTER TABLE agents ADD COLUMN instance_id TEXT;
ALTER TABLE agents ADD COLUMN zone TEXT;
ALTER TABLE agents ADD COLUMN instance_type TEXT;
ALTER TABLE agents ADD COLUMN asg TEXT;
CREATE INDEX agents_zone ON agents (zone, id);
CREATE INDEX agents_asg ON agents (asg, id);
