-- API keys and tenants. A key belongs to a tenant (by default the key's own name); every job,
-- result and idempotency key belongs to the tenant of the key that submitted it. Rows made before
-- keys existed, and every row made with GENQ_AUTH=off, belong to the tenant 'local'.

create table api_keys (
    id uuid primary key,
    name text not null,
    tenant text not null,
    -- Shown in `genqctl keys list` so an operator can tell keys apart; not secret.
    prefix text not null,
    -- SHA-256 of the whole key: keys are random 256-bit secrets, so a fast hash is enough, and the
    -- key itself is never stored.
    hash bytea not null,
    admin boolean not null default false,
    rate_per_min int check (rate_per_min > 0),
    max_queued int check (max_queued > 0),
    tokens_per_day bigint check (tokens_per_day > 0),
    created_at timestamptz not null default now(),
    revoked_at timestamptz
);

create index api_keys_prefix on api_keys (prefix);
-- `genqctl keys revoke NAME` must name one key.
create unique index api_keys_live_name on api_keys (name) where revoked_at is null;

-- Tokens charged to a key per UTC day (prompts x max_tokens at submission, as the job's budget).
create table api_key_usage (
    key_id uuid not null references api_keys (id) on delete cascade,
    day date not null,
    tokens bigint not null,
    primary key (key_id, day)
);

alter table jobs add column tenant text not null default 'local';
alter table jobs add column api_key_id uuid references api_keys (id);
-- Serves the per-key queued-jobs quota.
create index jobs_key_unfinished on jobs (api_key_id) where status in ('queued', 'running');

alter table generations add column tenant text not null default 'local';
-- Serves a tenant's /history, newest first.
create index generations_tenant_seq on generations (tenant, seq desc);

-- An Idempotency-Key is scoped to its tenant.
alter table idempotency_keys add column tenant text not null default 'local';
alter table idempotency_keys drop constraint idempotency_keys_pkey;
alter table idempotency_keys add primary key (tenant, key);
