-- Webhooks: a job may name a URL to call once it is final. The call is owed from the moment the
-- job turns final, in that same transaction (a trigger), whichever process finalizes it (worker,
-- API, reconciler, genqctl), so no delivery is lost to a restart; the API replicas work the table
-- off, retrying with backoff. Every attempt is kept, and shown in the job.
alter table jobs add column callback_url text;
-- Signs this key's jobs' webhooks instead of GENQ_WEBHOOK_SECRET. A signing key must be read to
-- sign, so it is stored as given (unlike the API key itself).
alter table api_keys add column webhook_secret text;

create table webhook_deliveries (
    job_id uuid primary key references jobs (id) on delete cascade,
    url text not null,
    -- Counts the outcomes owed: a failed job retried (`genqctl jobs retry`) owes its new outcome.
    round int not null default 1,
    owed_at timestamptz not null default now(),
    next_attempt_at timestamptz not null default now(),
    -- Attempts over every round; each attempt's number is also its lease: only the deliverer that
    -- took it as attempt n may record attempt n's outcome.
    attempts int not null default 0,
    -- Attempts of this round, which the backoff counts from.
    round_attempts int not null default 0,
    delivered_at timestamptz,
    gave_up_at timestamptz
);

-- What the deliverers poll: only deliveries still owed.
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where delivered_at is null and gave_up_at is null;

create table webhook_attempts (
    job_id uuid not null references jobs (id) on delete cascade,
    attempt int not null,
    round int not null,
    attempted_at timestamptz not null default now(),
    -- The receiver's answer; null when there was none (refused, timed out, unreachable).
    status_code int,
    error text,
    duration_ms int not null,
    primary key (job_id, attempt)
);

create function genq_owe_webhook() returns trigger
language plpgsql as $$
begin
    insert into webhook_deliveries (job_id, url) values (new.id, new.callback_url)
    on conflict (job_id) do update
        set round = webhook_deliveries.round + 1, url = excluded.url, owed_at = now(),
            next_attempt_at = now(), round_attempts = 0, delivered_at = null, gave_up_at = null;
    return null;
end
$$;

create trigger jobs_owe_webhook
    after update of status on jobs
    for each row
    when (new.callback_url is not null
          and new.status in ('completed', 'failed', 'cancelled')
          and old.status not in ('completed', 'failed', 'cancelled'))
    execute function genq_owe_webhook();
