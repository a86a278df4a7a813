-- Several models side by side: a catalogue of the models jobs may be routed to, aliases that
-- split traffic between them, and on every job the route it took. Each model has its own Redis
-- queue (see shared/src/queue/lanes.rs); PostgreSQL stays the record of every job.

-- A model jobs may ask for. Registered by `genqctl models add`, or by the first worker (or API
-- replica) that loads it. Its workers may be none: jobs then wait queued for one.
create table models (
    name text primary key check (length(name) between 1 and 128 and name !~ '[[:cntrl:]]'),
    -- SHA-256 (hex) of the GGUF file the model's last registering worker loaded.
    version text,
    -- Jobs that name no model go to the default one.
    is_default boolean not null default false,
    -- Where its jobs go when they fail on it (inference errors) or wait longer than
    -- fallback_after_secs with no live worker of it.
    fallback text references models (name),
    fallback_after_secs int check (fallback_after_secs > 0),
    -- `genqctl queue pause --model`: the API refuses new jobs for it with 503.
    intake_paused boolean not null default false,
    created_at timestamptz not null default now(),
    check (fallback is distinct from name)
);

create unique index models_one_default on models (is_default) where is_default;

-- A name that routes each request to one of several models, by weight, sticky per user.
create table model_aliases (
    name text primary key check (length(name) between 1 and 128 and name !~ '[[:cntrl:]]'),
    -- [{"model": "gpt2-v1", "weight": 90}, {"model": "gpt2-v2", "weight": 10}], in this order:
    -- each arm owns a range of the 10,000 user buckets (see shared/src/routing.rs).
    arms jsonb not null check (jsonb_typeof(arms) = 'array'),
    fallback text references models (name),
    fallback_after_secs int check (fallback_after_secs > 0),
    updated_at timestamptz not null default now()
);

-- The route of each job: what it asked for (a model or an alias), the model whose queue it is in,
-- and what to do if that model fails it. `model` (set at claim) stays the model that ran it.
alter table jobs
    add column requested_model text,
    add column routed_model text,
    -- 0: interactive (/generate, /v1/completions, /v1/chat/completions); 1: batch.
    add column priority smallint not null default 1,
    add column fallback_model text,
    add column fallback_after_secs int,
    -- Set when the job moved to its fallback: why.
    add column fallback_reason text,
    -- The version (SHA-256 of the GGUF) of the model that ran it.
    add column model_version text;

-- The reconciler's fallback step, every pass: queued jobs that have a fallback, oldest first.
create index jobs_queued_with_fallback on jobs (enqueued_at)
    where status = 'queued' and fallback_model is not null and fallback_after_secs is not null;
-- Per-model figures (genqctl queue stats --model, /metrics, genqctl models list).
create index jobs_unfinished_by_model on jobs (routed_model, status)
    where status in ('queued', 'running');
-- `genqctl models stats`: the jobs that asked for an alias, newest first.
create index jobs_requested_model on jobs (requested_model, created_at) where requested_model is not null;
