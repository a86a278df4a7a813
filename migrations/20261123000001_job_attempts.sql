-- One row per claim of a job: which worker ran it, how it ended, and how many prompts it generated
-- (renewed with the lease while it runs). The fault suite counts refused writes and repeated work
-- from it; operators see what happened to a job that ran more than once.
create table job_attempts (
    job_id uuid not null references jobs (id) on delete cascade,
    attempt int not null,
    worker text not null,
    claimed_at timestamptz not null default now(),
    ended_at timestamptz,
    -- completed, failed, cancelled (the attempt's own outcome was stored) or released (taken back:
    -- lost lease, transient failure, stopped engine); null while it runs.
    outcome text check (outcome in ('completed', 'failed', 'cancelled', 'released')),
    -- Its outcome arrived after the job had been finished, cancelled or taken back, and was refused.
    write_refused boolean not null default false,
    prompts_generated int not null default 0,
    primary key (job_id, attempt)
);
