-- What each worker's heartbeat reports of its engine, for the dashboard: slots holding a sequence,
-- and tokens sampled since it started (tokens/s is the change between two beats).
alter table workers add column slots_busy int not null default 0,
                    add column generated_tokens bigint not null default 0;

-- When a job last entered the queue: submitted, or put back (lost worker, transient failure,
-- `genqctl jobs retry`). Unlike queued_at, a re-dispatch of a job Redis lost does not move it, so
-- queue-wait figures count the whole wait.
alter table jobs add column enqueued_at timestamptz not null default now();
