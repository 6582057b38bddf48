-- Old history is deleted by age (--keep-events-for); this keeps that a range delete.
CREATE INDEX agent_events_by_time ON agent_events (at);
