-- Fair webhook delivery: each API replica caps the calls in flight per tenant and per tenant's
-- destination and pauses a tenant's destination that keeps failing, so one tenant's dead receiver
-- costs the others nothing. The deliverers choose by these two columns, copied here when the
-- delivery becomes owed. The destination is the URL's scheme and authority (`http://h:8080`); the
-- API stored the URL as its parser wrote it (host in lower case, default port left out), so this
-- is the URL's origin.
alter table webhook_deliveries
    add column tenant text not null default 'local',
    add column destination text not null default '';

update webhook_deliveries d
set tenant = j.tenant,
    destination = lower(coalesce(substring(d.url from '^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)'), ''))
from jobs j
where j.id = d.job_id;

create or replace function genq_owe_webhook() returns trigger
language plpgsql as $$
begin
    insert into webhook_deliveries (job_id, url, tenant, destination)
    values (new.id, new.callback_url, new.tenant,
            lower(coalesce(substring(new.callback_url from '^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)'),
                           '')))
    on conflict (job_id) do update
        set round = webhook_deliveries.round + 1, url = excluded.url, tenant = excluded.tenant,
            destination = excluded.destination, owed_at = now(), next_attempt_at = now(),
            round_attempts = 0, delivered_at = null, gave_up_at = null;
    return null;
end
$$;

-- The deliverers' choice of the earliest due delivery per tenant's destination.
create index webhook_deliveries_due_by_destination
    on webhook_deliveries (tenant, destination, next_attempt_at)
    where delivered_at is null and gave_up_at is null;
