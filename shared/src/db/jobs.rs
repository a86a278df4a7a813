//! Jobs: the record of every submitted batch and its lifecycle
//! (queued -> running -> completed | failed, or cancelled from queued or running).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::FINAL_CHANNEL;
use crate::types::{
    Counts, ErrorDetail, FinishReason, JobParams, JobStatus, JobView, QueueStats, ResultItem,
};

#[derive(Debug, Clone, sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    status: JobStatus,
    prompt_count: i32,
    params: Json<JobParams>,
    model: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// A job a worker has claimed; only this attempt may finish it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub attempt: i32,
    pub prompts: Vec<String>,
    pub params: JobParams,
    pub deadline: Option<DateTime<Utc>>,
}

/// How a job is run, beyond its sampling parameters.
#[derive(Debug, Clone, Copy)]
pub struct RunPolicy {
    /// Claims allowed before a lost worker or transient failure fails the job.
    pub max_attempts: i32,
    /// From submission to the deadline.
    pub timeout: std::time::Duration,
}

/// One prompt's finished result, as a worker hands it in.
#[derive(Debug, Clone)]
pub struct NewGeneration {
    pub index: i32,
    pub text: String,
    pub completion_tokens: i32,
    pub finish_reason: FinishReason,
    /// Set on results of inference for a deterministic request, so later ones can reuse them.
    pub cache_key: Option<Vec<u8>>,
    /// Answered from the result cache, without inference.
    pub cached: bool,
}

pub async fn insert<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: Uuid,
    prompts: &[String],
    params: &JobParams,
    policy: RunPolicy,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into jobs (id, dispatch_id, prompts, prompt_count, params, max_attempts, deadline)
           values ($1, $1, $2, $3, $4, $5, now() + make_interval(secs => $6))"#,
    )
    .bind(id)
    .bind(Json(prompts))
    .bind(prompts.len() as i32)
    .bind(Json(params))
    .bind(policy.max_attempts)
    .bind(policy.timeout.as_secs_f64())
    .execute(executor)
    .await?;
    Ok(())
}

/// Removes a job that was never acknowledged to its client (its dispatch failed).
pub async fn delete_unacknowledged(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(r#"delete from jobs where id = $1 and status = 'queued'"#)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn status(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<JobStatus>> {
    sqlx::query_scalar(r#"select status from jobs where id = $1"#)
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn view(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<JobView>> {
    let Some(job) = sqlx::query_as::<_, JobRow>(
        r#"select id, status, prompt_count, params, model, error_code, error_message, created_at,
                  started_at, finished_at
           from jobs where id = $1"#,
    )
    .bind(id)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let results: Vec<ResultItem> = sqlx::query_as::<
        _,
        (i32, String, String, i32, FinishReason, bool),
    >(
        r#"select prompt_index, prompt, generated_text, completion_tokens, finish_reason, cached
           from generations where job_id = $1 order by prompt_index"#,
    )
    .bind(id)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(
        |(index, prompt, generated_text, completion_tokens, finish_reason, cached)| ResultItem {
            index,
            prompt,
            generated_text,
            completion_tokens,
            finish_reason,
            cached,
        },
    )
    .collect();
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
    }))
}

/// Takes a queued job for `worker`. `None` when it is not queued (cancelled, already taken by
/// another delivery, or unknown): the caller then has nothing to do.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    model: &str,
) -> sqlx::Result<Option<Claim>> {
    type Row = (
        i32,
        Json<Vec<String>>,
        Json<JobParams>,
        Option<DateTime<Utc>>,
    );
    let row: Option<Row> = sqlx::query_as(
        r#"update jobs set status = 'running', worker = $2, model = $3, attempt = attempt + 1,
                  started_at = now(), lease_renewed_at = now()
           where id = $1 and status = 'queued'
           returning attempt, prompts, params, deadline"#,
    )
    .bind(id)
    .bind(worker)
    .bind(model)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(attempt, prompts, params, deadline)| Claim {
        id,
        attempt,
        prompts: prompts.0,
        params: params.0,
        deadline,
    }))
}

/// Stores the results and marks the job completed, in one transaction. `false` (and nothing
/// written) when the claim is no longer current: the job was cancelled or claimed again.
pub async fn complete(
    pool: &PgPool,
    claim: &Claim,
    model: &str,
    results: &[NewGeneration],
) -> sqlx::Result<bool> {
    finish(pool, claim, model, results, JobStatus::Completed, None).await
}

/// Marks the job failed with a reason, keeping the prompts that did finish.
pub async fn fail(
    pool: &PgPool,
    claim: &Claim,
    model: &str,
    finished: &[NewGeneration],
    error: &ErrorDetail,
) -> sqlx::Result<bool> {
    finish(pool, claim, model, finished, JobStatus::Failed, Some(error)).await
}

/// Keeps the prompts that finished before the job was cancelled, if the cancellation came during
/// this claim. `false` when the claim is not the one cancelled.
pub async fn keep_cancelled_results(
    pool: &PgPool,
    claim: &Claim,
    model: &str,
    finished: &[NewGeneration],
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let ours: Option<i32> = sqlx::query_scalar(
        r#"select attempt from jobs where id = $1 and status = 'cancelled' and attempt = $2
           for update"#,
    )
    .bind(claim.id)
    .bind(claim.attempt)
    .fetch_optional(&mut *tx)
    .await?;
    if ours.is_none() {
        tx.rollback().await?;
        return Ok(false);
    }
    insert_generations(&mut tx, claim, model, finished).await?;
    tx.commit().await?;
    Ok(true)
}

async fn finish(
    pool: &PgPool,
    claim: &Claim,
    model: &str,
    results: &[NewGeneration],
    status: JobStatus,
    error: Option<&ErrorDetail>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        r#"update jobs set status = $3, finished_at = now(), error_code = $4, error_message = $5
           where id = $1 and attempt = $2 and status = 'running'"#,
    )
    .bind(claim.id)
    .bind(claim.attempt)
    .bind(status)
    .bind(error.map(|e| e.code.as_str()))
    .bind(error.map(|e| e.message.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    insert_generations(&mut tx, claim, model, results).await?;
    notify_final(&mut tx, claim.id).await?;
    tx.commit().await?;
    Ok(true)
}

async fn insert_generations(
    tx: &mut Transaction<'_, Postgres>,
    claim: &Claim,
    model: &str,
    results: &[NewGeneration],
) -> sqlx::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = results.iter().map(|_| Uuid::now_v7()).collect();
    let indexes: Vec<i32> = results.iter().map(|r| r.index).collect();
    let prompts: Vec<&str> = results
        .iter()
        .map(|r| claim.prompts[r.index as usize].as_str())
        .collect();
    let texts: Vec<&str> = results.iter().map(|r| r.text.as_str()).collect();
    let tokens: Vec<i32> = results.iter().map(|r| r.completion_tokens).collect();
    let reasons: Vec<FinishReason> = results.iter().map(|r| r.finish_reason).collect();
    let cache_keys: Vec<Option<&[u8]>> = results.iter().map(|r| r.cache_key.as_deref()).collect();
    let cached: Vec<bool> = results.iter().map(|r| r.cached).collect();
    sqlx::query(
        r#"insert into generations
               (id, job_id, prompt_index, prompt, generated_text, completion_tokens, finish_reason,
                model_name, cache_key, cached)
           select id, $2, idx, prompt, text, tokens, reason, $8, key, hit
           from unnest($1::uuid[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[],
                       $9::bytea[], $10::bool[])
               as t(id, idx, prompt, text, tokens, reason, key, hit)
           order by idx"#,
    )
    .bind(ids)
    .bind(claim.id)
    .bind(indexes)
    .bind(prompts)
    .bind(texts)
    .bind(tokens)
    .bind(reasons)
    .bind(model)
    .bind(cache_keys)
    .bind(cached)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Announces many jobs final in one round trip.
pub(super) async fn notify_final_all(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query(r#"select pg_notify($1, id::text) from unnest($2::uuid[]) as id"#)
        .bind(FINAL_CHANNEL)
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(super) async fn notify_final(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(r#"select pg_notify($1, $2)"#)
        .bind(FINAL_CHANNEL)
        .bind(id.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyFinal(JobStatus),
    NotFound,
}

/// Cancels a queued or running job. A running job's worker sees the status and stops.
pub async fn cancel(pool: &PgPool, id: Uuid) -> sqlx::Result<CancelOutcome> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = 'cancelled',
                  error_message = 'cancelled on request'
           where id = $1 and status in ('queued', 'running')"#,
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        notify_final(&mut tx, id).await?;
        tx.commit().await?;
        return Ok(CancelOutcome::Cancelled);
    }
    tx.rollback().await?;
    Ok(match status(pool, id).await? {
        Some(status) => CancelOutcome::AlreadyFinal(status),
        None => CancelOutcome::NotFound,
    })
}

/// Cancels every queued job; returns their ids so the caller can take them out of Redis.
pub async fn cancel_all_queued(pool: &PgPool, reason: &str) -> sqlx::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = 'cancelled',
                  error_message = $1
           where status = 'queued' returning id"#,
    )
    .bind(reason)
    .fetch_all(&mut *tx)
    .await?;
    notify_final_all(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(ids)
}

pub async fn stats(pool: &PgPool) -> sqlx::Result<QueueStats> {
    let counts: Vec<(JobStatus, i64)> =
        sqlx::query_as(r#"select status, count(*) from jobs group by status"#)
            .fetch_all(pool)
            .await?;
    let count = |s: JobStatus| {
        counts
            .iter()
            .find(|(status, _)| *status == s)
            .map_or(0, |(_, n)| *n)
    };
    let live_workers = super::workers::live(pool).await?.len() as i64;
    Ok(QueueStats {
        queued: count(JobStatus::Queued),
        running: count(JobStatus::Running),
        completed: count(JobStatus::Completed),
        failed: count(JobStatus::Failed),
        cancelled: count(JobStatus::Cancelled),
        live_workers,
        intake_paused: super::control::intake_paused(pool).await?,
    })
}
