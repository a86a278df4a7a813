-- Every change to api_keys (a revocation, a new webhook secret, rows changed, deleted or truncated
-- by hand) is announced on one channel, so that each API replica drops the keys it has cached (a
-- poll then costs one query, not two) as soon as the change commits. New keys need no
-- announcement: only keys that authenticated are cached. Within one transaction PostgreSQL sends
-- the same payload once, however many rows change.
create function genq_notify_key_change() returns trigger
language plpgsql as $$
begin
    perform pg_notify('genq_key_changes', '');
    return null;
end
$$;

create trigger api_keys_changed
    after update or delete on api_keys
    for each row
    execute function genq_notify_key_change();

create trigger api_keys_truncated
    after truncate on api_keys
    for each statement
    execute function genq_notify_key_change();
