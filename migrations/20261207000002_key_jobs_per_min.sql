-- A per-key limit on jobs submitted per minute, beside the limit on requests: one POST /batches of
-- 10,000 jobs is one request, so bulk intake needs a limit of its own. Kept in Redis like the
-- request limit (a token bucket every API replica draws on); null is unlimited.
alter table api_keys add column jobs_per_min int check (jobs_per_min > 0);
