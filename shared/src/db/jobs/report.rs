//! Read-only figures about jobs for the fault-injection suite and the benchmarks. Nothing here
//! writes; the service itself never calls these.

use sqlx::PgPool;
use uuid::Uuid;

use crate::types::JobStatus;

/// Where one job stands, as the fault suite's audit compares it with what its client read.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Standing {
    pub id: Uuid,
    pub status: JobStatus,
    /// Read as text rather than [`crate::types::ErrorCode`], so a code the audit does not know
    /// still counts (under its own name) instead of failing the read.
    pub error_code: Option<String>,
}

/// Every job's status and error code.
pub async fn standings(pool: &PgPool) -> sqlx::Result<Vec<Standing>> {
    sqlx::query_as(r#"select id, status, error_code from jobs"#)
        .fetch_all(pool)
        .await
}

/// Completed jobs without exactly one result for each prompt: lost results.
pub async fn completed_without_every_result(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        r#"select j.id from jobs j
           left join (select job_id, count(*) as n, count(distinct prompt_index) as distinct_n
                      from generations group by job_id) g on g.job_id = j.id
           where j.status = 'completed'
             and (coalesce(g.n, 0) <> j.prompt_count or coalesce(g.distinct_n, 0) <> j.prompt_count)"#,
    )
    .fetch_all(pool)
    .await
}

/// Completed jobs that ran on another model than the one whose queue they were in.
pub async fn ran_on_another_model(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from jobs
           where status = 'completed' and routed_model is not null and model <> routed_model"#,
    )
    .fetch_one(pool)
    .await
}

/// Final jobs whose outcome was stored by another claim than their last one: a worker that had
/// lost its claim (its lease lapsed and the job was claimed again) wrote anyway. Fencing keeps
/// this at zero.
pub async fn finished_by_a_stale_claim(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(distinct j.id) from jobs j join job_attempts a on a.job_id = j.id
           where j.status in ('completed', 'failed') and a.outcome in ('completed', 'failed')
             and a.attempt <> j.attempt"#,
    )
    .fetch_one(pool)
    .await
}

/// Jobs not yet final (queued or running).
pub async fn unfinished(pool: &PgPool) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(r#"select id from jobs where status in ('queued', 'running')"#)
        .fetch_all(pool)
        .await
}

/// How many of `ids` are not yet final.
pub async fn unfinished_among(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from jobs where id = any($1) and status in ('queued', 'running')"#,
    )
    .bind(ids)
    .fetch_one(pool)
    .await
}

pub async fn running_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(r#"select count(*) from jobs where status = 'running'"#)
        .fetch_one(pool)
        .await
}

/// Jobs running under the worker registered as `worker`.
pub async fn running_on(pool: &PgPool, worker: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(r#"select id from jobs where status = 'running' and worker = $1"#)
        .bind(worker)
        .fetch_all(pool)
        .await
}

/// Running jobs per worker name, the busiest first.
pub async fn running_by_worker(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        r#"select worker, count(*) from jobs where status = 'running' and worker is not null
           group by worker order by 2 desc"#,
    )
    .fetch_all(pool)
    .await
}

/// How many of `ids` are still waiting for another worker: queued, or running under `dead`.
pub async fn still_held_by(pool: &PgPool, ids: &[Uuid], dead: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from jobs where id = any($1)
             and (status = 'queued' or (status = 'running' and worker = $2))"#,
    )
    .bind(ids)
    .bind(dead)
    .fetch_one(pool)
    .await
}

/// How many jobs a worker whose name starts with `worker` has claimed since `seconds_ago`
/// seconds ago, by PostgreSQL's clock.
pub async fn claimed_lately(pool: &PgPool, worker: &str, seconds_ago: f64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from job_attempts
           where left(worker, length($1)) = $1
             and claimed_at > now() - make_interval(secs => $2)"#,
    )
    .bind(worker)
    .bind(seconds_ago)
    .fetch_one(pool)
    .await
}

/// How many of `ids` each worker completed (the worker of the attempt that completed them), by
/// worker name.
pub async fn completed_by_worker(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(
        r#"select worker, count(*) from jobs
           where id = any($1) and status = 'completed' and worker is not null
           group by worker order by worker"#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// What happened to one job, in seconds before now (PostgreSQL's clock): when it was created,
/// last (re)dispatched and finished, and each claim of it.
#[derive(Debug, Clone)]
pub struct Story {
    pub id: Uuid,
    pub status: JobStatus,
    pub created_ago: f64,
    pub queued_ago: f64,
    pub finished_ago: Option<f64>,
    /// In order.
    pub claims: Vec<StoryClaim>,
}

/// One claim of a [`Story`]'s job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoryClaim {
    pub worker: String,
    pub claimed_ago: f64,
    pub ended_ago: Option<f64>,
    /// `None` while it runs.
    pub outcome: Option<String>,
}

/// The story of the job of `ids` that finished last (or is still unfinished): where the fault
/// suite's slowest recovery waited.
pub async fn last_to_finish(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Option<Story>> {
    let job: Option<(Uuid, JobStatus, f64, f64, Option<f64>)> = sqlx::query_as(
        r#"select id, status,
                  extract(epoch from now() - created_at)::float8,
                  extract(epoch from now() - queued_at)::float8,
                  extract(epoch from now() - finished_at)::float8
           from jobs where id = any($1)
           order by finished_at desc nulls first limit 1"#,
    )
    .bind(ids)
    .fetch_optional(pool)
    .await?;
    let Some((id, status, created_ago, queued_ago, finished_ago)) = job else {
        return Ok(None);
    };
    let claims = sqlx::query_as(
        r#"select worker,
                  extract(epoch from now() - claimed_at)::float8 as claimed_ago,
                  extract(epoch from now() - ended_at)::float8 as ended_ago,
                  outcome
           from job_attempts where job_id = $1 order by attempt"#,
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(Story {
        id,
        status,
        created_ago,
        queued_ago,
        finished_ago,
        claims,
    }))
}
