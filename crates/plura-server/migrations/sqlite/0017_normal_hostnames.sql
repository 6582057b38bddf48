-- Hostnames in their normal form (lower case, no trailing dot), as logins now send them, so that
-- `WAF-1.` and `waf-1` are one agent as DNS would have it. A row whose normal form another row of
-- the same address has, or would have, is left as it is: merging two agents and their histories
-- is the operator's call, so the server names such rows in its log at every start instead.
UPDATE agents SET hostname = lower(rtrim(hostname, '.'))
WHERE hostname <> lower(rtrim(hostname, '.'))
  AND NOT EXISTS (
    SELECT 1 FROM agents AS other
    WHERE other.ip = agents.ip AND other.id <> agents.id
      AND lower(rtrim(other.hostname, '.')) = lower(rtrim(agents.hostname, '.')));
