-- A running job's lease: its worker renews it with every heartbeat for the jobs it really holds.
-- A job whose lease lapses is taken back even while its worker looks alive, which covers a claim
-- whose answer never reached the worker (a connection cut at commit) and a worker that lost
-- track of a job. A worker's own heartbeat alone cannot tell those apart.
alter table jobs add column lease_renewed_at timestamptz;
update jobs set lease_renewed_at = now() where status = 'running';

-- The apalis task now carrying the job through Redis. A job's first dispatch uses its own id; every
-- re-dispatch gets a fresh one, so it never collides with what Redis still holds of an earlier
-- delivery (a payload apalis would refuse to overwrite, or one a later clean-up would delete from
-- under the new task).
alter table jobs add column dispatch_id uuid;
update jobs set dispatch_id = id;
alter table jobs alter column dispatch_id set not null;
