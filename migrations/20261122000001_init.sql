-- PostgreSQL is the record of every job and generation; Redis only carries job ids to workers.

create table jobs (
    id uuid primary key,
    status text not null default 'queued'
        check (status in ('queued', 'running', 'completed', 'failed', 'cancelled')),
    prompts jsonb not null check (jsonb_typeof(prompts) = 'array'),
    prompt_count int not null,
    params jsonb not null,
    -- Set when a worker claims the job: the model that ran it.
    model text,
    worker text,
    -- Raised by every claim; a worker may finish the job only with the attempt it claimed, so a
    -- stale worker's late write is refused.
    attempt int not null default 0,
    error_code text,
    error_message text,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz
);

create index jobs_status_created_at on jobs (status, created_at);

create table generations (
    -- Orders /history: newest first, keyset pagination on this column.
    seq bigint generated always as identity primary key,
    id uuid not null unique,
    job_id uuid not null references jobs (id) on delete cascade,
    prompt_index int not null,
    prompt text not null,
    generated_text text not null,
    completion_tokens int not null,
    finish_reason text not null check (finish_reason in ('length', 'stop')),
    model_name text not null,
    created_at timestamptz not null default now(),
    -- One result per prompt of a job, whatever retries or duplicate deliveries happen.
    unique (job_id, prompt_index)
);

create table workers (
    name text primary key,
    hostname text not null,
    pid int not null,
    model text not null,
    slots int not null,
    started_at timestamptz not null default now(),
    last_seen timestamptz not null default now(),
    stopped_at timestamptz
);

-- One row of queue-wide switches.
create table control (
    singleton boolean primary key default true check (singleton),
    intake_paused boolean not null default false,
    changed_at timestamptz not null default now()
);

insert into control default values;
