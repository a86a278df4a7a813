-- Job control: attempts limit, deadlines, re-dispatch bookkeeping, idempotency keys, retention.

-- How many claims a job may have before a lost worker or a transient failure fails it for good;
-- fixed at submission, so every process agrees on it.
alter table jobs add column max_attempts int not null default 3 check (max_attempts >= 1);
-- Past this instant the job ends failed with code `timeout`, keeping finished prompts.
alter table jobs add column deadline timestamptz;
-- When the job last went (back) to queued: the reconciler re-dispatches queued jobs that Redis
-- has lost only once they have waited a while.
alter table jobs add column queued_at timestamptz not null default now();

create index jobs_running_worker on jobs (worker) where status = 'running';
create index jobs_finished_at on jobs (finished_at) where finished_at is not null;

-- `Idempotency-Key` of POST /batch: a repeat with the same body gets the original job.
create table idempotency_keys (
    key text primary key,
    request_hash bytea not null,
    job_id uuid not null references jobs (id) on delete cascade,
    created_at timestamptz not null default now()
);
