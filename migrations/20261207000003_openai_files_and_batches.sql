-- OpenAI's Files and Batch APIs (/v1/files, /v1/batches), kept beside genq's own jobs: a batch's
-- request lines become ordinary jobs, so workers, metrics, history and the reconciler see them.

-- Prompt tokens of each result, as the worker fed them: the `usage` OpenAI's answers carry.
-- Null on results stored before this column existed.
alter table generations add column prompt_tokens int;

-- Files live in PostgreSQL, where every API replica reads them: a row per file, its bytes in
-- chunks of about 1 MiB so that uploads and downloads stream without holding a file in memory.
create table files (
    id text primary key,
    tenant text not null,
    api_key_id uuid,
    -- 'batch' (uploaded), 'batch_output' (a batch's output and error files).
    purpose text not null,
    filename text not null,
    bytes bigint not null,
    lines int not null,
    created_at timestamptz not null default now()
);

create index files_tenant_created_at on files (tenant, created_at desc, id);

create table file_chunks (
    file_id text not null references files (id) on delete cascade,
    seq int not null,
    data bytea not null,
    primary key (file_id, seq)
);

create table openai_batches (
    id text primary key,
    tenant text not null,
    api_key_id uuid,
    endpoint text not null,
    input_file_id text not null,
    completion_window text not null,
    metadata jsonb,
    status text not null default 'validating'
        check (status in ('validating', 'failed', 'in_progress', 'finalizing', 'completed',
                          'expired', 'cancelling', 'cancelled')),
    -- Why validation failed: [{code, message, param, line}].
    errors jsonb,
    output_file_id text,
    error_file_id text,
    -- request_counts: refreshed by the runner while the batch runs, final once it ends.
    total int not null default 0,
    completed int not null default 0,
    failed int not null default 0,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    in_progress_at timestamptz,
    finalizing_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    expired_at timestamptz,
    cancelling_at timestamptz,
    cancelled_at timestamptz,
    -- The API replica driving the batch's next step holds it until then; another takes over
    -- once it lapses (the replica died).
    lease_until timestamptz
);

create index openai_batches_tenant_created_at on openai_batches (tenant, created_at desc, id);
create index openai_batches_unsettled on openai_batches (status)
    where status in ('validating', 'in_progress', 'finalizing', 'cancelling');

-- A batch's jobs, found without its lines: whether any is unfinished is one index lookup.
alter table jobs add column openai_batch_id text;
create index jobs_openai_batch_unfinished on jobs (openai_batch_id)
    where openai_batch_id is not null and status in ('queued', 'running');

-- One row per request line of a batch: the jobs it became and what its answer needs.
create table openai_batch_requests (
    batch_id text not null references openai_batches (id) on delete cascade,
    line int not null,
    custom_id text not null,
    -- The request as validated: endpoint kind, model, prompt count, n, echo.
    request jsonb not null,
    job_ids uuid[] not null,
    primary key (batch_id, line),
    unique (batch_id, custom_id)
);
