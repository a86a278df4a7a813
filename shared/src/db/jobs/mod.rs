//! Jobs: the record of every submitted batch and its lifecycle
//! (queued -> running -> completed | failed, or cancelled from queued or running). All SQL that
//! writes the `jobs` table is in this module.
//!
//! # Layout
//! - here: recording a job, reading it (`view`, `status`, `stats`), notifications.
//! - [`lifecycle`]: claim, complete or fail fenced by the attempt, cancel.
//! - [`recovery`]: leases, lost workers, deadlines, lost dispatches, the dead list, retention.
//! - [`dispatch`]: which apalis task carries each job.
//! - [`reconciler_lock`]: one reconciler pass at a time per queue.
//! - [`report`]: read-only figures for the fault suite and the benchmarks.

mod dispatch;
mod lifecycle;
mod reconciler_lock;
mod recovery;
pub mod report;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

pub use dispatch::*;
pub use lifecycle::*;
pub use reconciler_lock::*;
pub use recovery::*;

use super::Scope;
use crate::queue::Priority;
use crate::types::{
    Counts, ErrorCode, ErrorDetail, FinishReason, JobParams, JobStatus, JobView, QueueStats,
    ResultItem, RouteView, WebhookView,
};

#[derive(Debug, Clone, sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    status: JobStatus,
    prompt_count: i32,
    params: Json<JobParams>,
    model: Option<String>,
    error_code: Option<ErrorCode>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    results: Json<Vec<ResultItem>>,
    webhook: Option<Json<WebhookView>>,
    route: Option<Json<RouteView>>,
}

/// A job a worker has claimed; only this attempt may finish it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub attempt: i32,
    pub prompts: Vec<String>,
    pub params: JobParams,
    pub deadline: Option<DateTime<Utc>>,
    /// Whose job it is: the result cache answers only with this tenant's results.
    pub tenant: String,
    /// From the job's submission, or its last re-queueing, to this claim, by PostgreSQL's clock.
    pub queue_wait_secs: f64,
}

/// How a job is run, beyond its sampling parameters.
#[derive(Debug, Clone, Copy)]
pub struct RunPolicy {
    /// Claims allowed before a lost worker or transient failure fails the job.
    pub max_attempts: i32,
    /// From submission to the deadline.
    pub timeout: std::time::Duration,
}

/// Who submitted a job: its tenant, and the key (none with `GENQ_AUTH=off`).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub tenant: &'a str,
    pub key_id: Option<Uuid>,
}

/// Where a job goes (see [`crate::routing`]) and how urgently.
#[derive(Debug, Clone, Copy)]
pub struct JobRoute<'a> {
    /// What the request named: a model or an alias.
    pub requested: &'a str,
    /// The model whose queue the job waits in.
    pub model: &'a str,
    pub priority: Priority,
    pub fallback: Option<&'a str>,
    pub fallback_after_secs: Option<i32>,
}

impl<'a> JobRoute<'a> {
    pub fn of(route: &'a crate::routing::Route, priority: Priority) -> JobRoute<'a> {
        JobRoute {
            requested: &route.requested,
            model: &route.model,
            priority,
            fallback: route.fallback.as_deref(),
            fallback_after_secs: route.fallback_after_secs,
        }
    }
}

/// One prompt's finished result, as a worker hands it in.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub index: i32,
    pub text: String,
    pub completion_tokens: i32,
    /// Tokens the prompt was fed as (None where unknown: results cached before it was stored).
    pub prompt_tokens: Option<i32>,
    pub finish_reason: FinishReason,
    /// Set on results of inference for a deterministic request, so later ones can reuse them.
    pub cache_key: Option<Vec<u8>>,
    /// Answered from the result cache, without inference.
    pub cached: bool,
    /// The output filter changed the text (see `crate::redact`).
    pub redacted: bool,
}

pub async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    prompts: &[String],
    params: &JobParams,
    policy: RunPolicy,
    owner: Owner<'_>,
    callback_url: Option<&str>,
    route: JobRoute<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into jobs (id, dispatch_id, prompts, prompt_count, params, max_attempts, deadline,
                             tenant, api_key_id, callback_url, requested_model, routed_model,
                             priority, fallback_model, fallback_after_secs)
           values ($1, $1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7, $8, $9, $10, $11,
                   $12, $13, $14)"#,
    )
    .bind(id)
    .bind(Json(prompts))
    .bind(prompts.len() as i32)
    .bind(Json(params))
    .bind(policy.max_attempts)
    .bind(policy.timeout.as_secs_f64())
    .bind(owner.tenant)
    .bind(owner.key_id)
    .bind(callback_url)
    .bind(route.requested)
    .bind(route.model)
    .bind(route.priority.as_column())
    .bind(route.fallback)
    .bind(route.fallback_after_secs)
    .execute(executor)
    .await?;
    Ok(())
}

/// One job of [`insert_many`].
pub struct NewJob<'a> {
    pub id: Uuid,
    pub prompts: &'a [String],
    pub params: &'a JobParams,
    pub timeout: std::time::Duration,
    pub callback_url: Option<&'a str>,
    pub route: JobRoute<'a>,
}

/// Records many jobs in one statement (bulk intake, or an OpenAI batch's, named by
/// `openai_batch`), each dispatched under its own id.
pub async fn insert_many<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    jobs: &[NewJob<'_>],
    max_attempts: i32,
    owner: Owner<'_>,
    openai_batch: Option<&str>,
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let prompts: Vec<Json<&[String]>> = jobs.iter().map(|j| Json(j.prompts)).collect();
    let counts: Vec<i32> = jobs.iter().map(|j| j.prompts.len() as i32).collect();
    let params: Vec<Json<&JobParams>> = jobs.iter().map(|j| Json(j.params)).collect();
    let timeouts: Vec<f64> = jobs.iter().map(|j| j.timeout.as_secs_f64()).collect();
    let callbacks: Vec<Option<&str>> = jobs.iter().map(|j| j.callback_url).collect();
    let requested: Vec<&str> = jobs.iter().map(|j| j.route.requested).collect();
    let models: Vec<&str> = jobs.iter().map(|j| j.route.model).collect();
    let priorities: Vec<i16> = jobs.iter().map(|j| j.route.priority.as_column()).collect();
    let fallbacks: Vec<Option<&str>> = jobs.iter().map(|j| j.route.fallback).collect();
    let patience: Vec<Option<i32>> = jobs.iter().map(|j| j.route.fallback_after_secs).collect();
    sqlx::query(
        r#"insert into jobs (id, dispatch_id, prompts, prompt_count, params, max_attempts, deadline,
                             tenant, api_key_id, callback_url, openai_batch_id, requested_model,
                             routed_model, priority, fallback_model, fallback_after_secs)
           select id, id, prompts, prompt_count, params, $6, now() + make_interval(secs => timeout),
                  $7, $8, callback_url, $10, requested, model, priority, fallback, patience
           from unnest($1::uuid[], $2::jsonb[], $3::int4[], $4::jsonb[], $5::float8[], $9::text[],
                       $11::text[], $12::text[], $13::int2[], $14::text[], $15::int4[])
                as t(id, prompts, prompt_count, params, timeout, callback_url, requested, model,
                     priority, fallback, patience)"#,
    )
    .bind(&ids)
    .bind(&prompts)
    .bind(&counts)
    .bind(&params)
    .bind(&timeouts)
    .bind(max_attempts)
    .bind(owner.tenant)
    .bind(owner.key_id)
    .bind(&callbacks)
    .bind(openai_batch)
    .bind(&requested)
    .bind(&models)
    .bind(&priorities)
    .bind(&fallbacks)
    .bind(&patience)
    .execute(executor)
    .await?;
    Ok(())
}

/// The job's prompts, in order (empty for an unknown job).
pub async fn prompts(pool: &PgPool, id: Uuid) -> sqlx::Result<Vec<String>> {
    let prompts: Option<Json<Vec<String>>> =
        sqlx::query_scalar(r#"select prompts from jobs where id = $1"#)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(prompts.map(|p| p.0).unwrap_or_default())
}

pub async fn status(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<JobStatus>> {
    sqlx::query_scalar(r#"select status from jobs where id = $1"#)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The job's status if `scope` may see it.
pub async fn status_in(
    pool: &PgPool,
    id: Uuid,
    scope: Scope<'_>,
) -> sqlx::Result<Option<JobStatus>> {
    sqlx::query_scalar(
        r#"select status from jobs where id = $1 and ($2::text is null or tenant = $2)"#,
    )
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(pool)
    .await
}

/// The job with its results, if `scope` may see it: another tenant's job is `None`, exactly as an
/// unknown one. One query (the job by primary key, its results by the (job_id, prompt_index)
/// key): clients that poll call this a lot.
pub async fn view(pool: &PgPool, id: Uuid, scope: Scope<'_>) -> sqlx::Result<Option<JobView>> {
    let Some(job) = sqlx::query_as::<_, JobRow>(
        r#"select id, status, prompt_count, params, model, error_code, error_message, created_at,
                  started_at, finished_at,
                  (select coalesce(json_agg(json_build_object(
                              'index', g.prompt_index, 'prompt', g.prompt,
                              'generated_text', g.generated_text,
                              'completion_tokens', g.completion_tokens,
                              'finish_reason', g.finish_reason, 'cached', g.cached,
                              'redacted', g.redacted) order by g.prompt_index), '[]')
                   from generations g where g.job_id = jobs.id) as results,
                  case when callback_url is not null then
                      (select json_build_object(
                           'url', jobs.callback_url,
                           'status', case when jobs.status in ('queued', 'running') then 'waiting'
                                          when d.delivered_at is not null then 'delivered'
                                          when d.gave_up_at is not null then 'failed'
                                          when d.job_id is not null then 'pending'
                                          else 'waiting' end,
                           'next_attempt_at', case when d.delivered_at is null
                                                    and d.gave_up_at is null
                                                   then d.next_attempt_at end,
                           'delivered_at', d.delivered_at,
                           'attempts', (select coalesce(json_agg(json_build_object(
                                               'attempt', a.attempt,
                                               'attempted_at', a.attempted_at,
                                               'status_code', a.status_code, 'error', a.error,
                                               'duration_ms', a.duration_ms)
                                               order by a.attempt), '[]')
                                        from webhook_attempts a where a.job_id = jobs.id))
                       from (select 1) one
                       left join webhook_deliveries d on d.job_id = jobs.id)
                  end as webhook,
                  case when routed_model is not null then
                      json_build_object('requested', coalesce(requested_model, routed_model),
                                        'model', routed_model,
                                        'version', model_version,
                                        'fallback_reason', fallback_reason)
                  end as route
           from jobs where id = $1 and ($2::text is null or tenant = $2)"#,
    )
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let results = job.results.0;
    let completed = results.len() as i32;
    let failed = if job.status == JobStatus::Failed {
        job.prompt_count - completed
    } else {
        0
    };
    let error = job.error_code.map(|code| ErrorDetail {
        code,
        message: job.error_message.unwrap_or_default(),
    });
    Ok(Some(JobView {
        task_id: job.id,
        status: job.status,
        model: job.model,
        params: job.params.0,
        created_at: job.created_at,
        started_at: job.started_at,
        finished_at: job.finished_at,
        counts: Counts {
            total: job.prompt_count,
            completed,
            failed,
        },
        results,
        error,
        webhook: job.webhook.map(|w| w.0),
        route: job.route.map(|r| r.0),
    }))
}

/// Figures of the whole queue, or of one model's (`model`).
pub async fn stats(pool: &PgPool, model: Option<&str>) -> sqlx::Result<QueueStats> {
    let counts: Vec<(JobStatus, i64)> = sqlx::query_as(
        r#"select status, count(*) from jobs where ($1::text is null or routed_model = $1)
           group by status"#,
    )
    .bind(model)
    .fetch_all(pool)
    .await?;
    let count = |s: JobStatus| {
        counts
            .iter()
            .find(|(status, _)| *status == s)
            .map_or(0, |(_, n)| *n)
    };
    let live = super::workers::live(pool).await?;
    let live_workers = live
        .iter()
        .filter(|w| model.is_none_or(|m| w.model == m))
        .count() as i64;
    let intake_paused =
        super::control::intake_paused(pool).await?
            || match model {
                Some(model) => sqlx::query_scalar::<_, bool>(
                    r#"select coalesce((select intake_paused from models where name = $1), false)"#,
                )
                .bind(model)
                .fetch_one(pool)
                .await?,
                None => false,
            };
    Ok(QueueStats {
        queued: count(JobStatus::Queued),
        running: count(JobStatus::Running),
        completed: count(JobStatus::Completed),
        failed: count(JobStatus::Failed),
        cancelled: count(JobStatus::Cancelled),
        live_workers,
        intake_paused,
    })
}

/// The cluster's backlog, as `GET /metrics` reports it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Backlog {
    pub queued: i64,
    pub running: i64,
    /// How long the oldest queued job has waited; 0 when none does.
    pub oldest_queued_secs: f64,
}

/// Unfinished jobs only, which `jobs_status_created_at` finds without reading finished ones;
/// of one model's queue with `model`.
pub async fn backlog(pool: &PgPool, model: Option<&str>) -> sqlx::Result<Backlog> {
    sqlx::query_as(
        r#"select count(*) filter (where status = 'queued') as queued,
                  count(*) filter (where status = 'running') as running,
                  coalesce(extract(epoch from now() - min(enqueued_at) filter (where status = 'queued')),
                           0)::float8 as oldest_queued_secs
           from jobs where status in ('queued', 'running')
             and ($1::text is null or routed_model = $1)"#,
    )
    .bind(model)
    .fetch_one(pool)
    .await
}

/// The backlog per model (queued, running), for `GET /metrics`.
pub async fn backlog_by_model(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        r#"select m.name,
                  count(j.id) filter (where j.status = 'queued'),
                  count(j.id) filter (where j.status = 'running')
           from models m left join jobs j
                on j.routed_model = m.name and j.status in ('queued', 'running')
           group by m.name order by m.name"#,
    )
    .fetch_all(pool)
    .await
}
