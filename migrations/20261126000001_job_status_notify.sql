-- Every change of a job's status is announced on one channel, whoever makes it (API, worker,
-- reconciler, genqctl): one LISTEN connection per process then wakes exactly the waiters of that
-- job (long-polls, event streams, a running job's cancel watch) instead of each re-reading the
-- table. The payload is the job's id; within one transaction PostgreSQL sends a payload once.
create function genq_notify_job_status() returns trigger
language plpgsql as $$
begin
    perform pg_notify('genq_job_status', new.id::text);
    return null;
end
$$;

create trigger jobs_status_changed
    after update of status on jobs
    for each row
    when (old.status is distinct from new.status)
    execute function genq_notify_job_status();
