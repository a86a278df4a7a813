-- A deep backlog must not make the reconciler's periodic work grow with it: each query it runs over
-- queued jobs is served by a partial index holding only queued jobs, and it checks against Redis
-- only the jobs (re)dispatched since its last pass.

-- Jobs (re)dispatched within a window, in order (the check that Redis holds them).
create index jobs_queued_at on jobs (queued_at, id) where status = 'queued';
-- Queued jobs past their deadline.
create index jobs_queued_deadline on jobs (deadline) where status = 'queued' and deadline is not null;
-- Queued jobs whose delivery apalis has finished with (found by task id in its done and dead sets).
create index jobs_queued_dispatch on jobs (dispatch_id) where status = 'queued';

-- Set when the API recorded a job but Redis refused its push: the next pass dispatches it
-- without waiting for it to fall in the window.
alter table jobs add column undispatched boolean not null default false;
create index jobs_undispatched on jobs (id) where undispatched and status = 'queued';

-- How far the reconciler has checked queued jobs against Redis (their `queued_at`), per queue:
-- shared by every API replica, kept across restarts.
create table reconciler_marks (
    queue text primary key,
    checked_until timestamptz not null
);
