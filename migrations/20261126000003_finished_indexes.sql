-- A million finished jobs must not make retention or listings grow with them.

-- Deleting a job cascades to its idempotency key: without this index each deleted job scanned the
-- whole table.
create index idempotency_keys_job on idempotency_keys (job_id);
-- Jobs newest first of every status (`genqctl jobs list`): an index range, not a sort of them all.
create index jobs_created_at on jobs (created_at);
