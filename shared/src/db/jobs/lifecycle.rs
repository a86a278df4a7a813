//! A job's lifecycle: a worker claims it, stores its outcome fenced by the claim's attempt, or it
//! is cancelled. Every claim is an attempt (`super::super::attempts`), written alongside.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

use super::{Claim, NewGeneration};
use crate::db::Scope;
use crate::{
    db::{
        attempts::{self, AttemptOutcome},
        generations,
    },
    types::{ErrorCode, ErrorDetail, JobParams, JobStatus},
};

/// How long a claim waits for each lock on its job's row (`lock_timeout`). Longer most likely
/// means a peer cut off mid-transaction holds the row (PostgreSQL ends its session after
/// [`crate::db::IDLE_IN_TRANSACTION`]): the claim gives up with SQLSTATE 55P03 and its delivery
/// is retried, rather than outlasting the worker's claim patience, which would count PostgreSQL
/// as unreachable and stop a worker that reaches it well.
pub const CLAIM_LOCK_WAIT: Duration = Duration::from_secs(1);

/// Takes a queued job for `worker`, which serves `model`. `None` when it is not queued
/// (cancelled, already taken by another delivery, or unknown) or waits for another model (a
/// delivery left over from before it moved to its fallback): the caller then has nothing to do.
pub async fn claim(
    pool: &PgPool,
    id: Uuid,
    worker: &str,
    model: &str,
    model_version: &str,
) -> sqlx::Result<Option<Claim>> {
    type Row = (
        i32,
        Json<Vec<String>>,
        Json<JobParams>,
        Option<DateTime<Utc>>,
        String,
        f64,
    );
    let mut tx = pool.begin().await?;
    sqlx::query("select set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", CLAIM_LOCK_WAIT.as_millis()))
        .execute(&mut *tx)
        .await?;
    let row: Option<Row> = sqlx::query_as(
        r#"update jobs set status = 'running', worker = $2, model = $3, model_version = $4,
                  attempt = attempt + 1, started_at = now(), lease_renewed_at = now()
           where id = $1 and status = 'queued' and (routed_model is null or routed_model = $3)
           returning attempt, prompts, params, deadline, tenant,
                     extract(epoch from now() - enqueued_at)::float8"#,
    )
    .bind(id)
    .bind(worker)
    .bind(model)
    .bind(model_version)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((attempt, prompts, params, deadline, tenant, queue_wait_secs)) = row else {
        tx.rollback().await?;
        return Ok(None);
    };
    attempts::begin(&mut *tx, id, attempt, worker).await?;
    tx.commit().await?;
    Ok(Some(Claim {
        id,
        attempt,
        prompts: prompts.0,
        params: params.0,
        deadline,
        tenant,
        queue_wait_secs,
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
        attempts::refuse_write(pool, claim.id, claim.attempt, generated(finished)).await?;
        return Ok(false);
    }
    generations::insert(&mut tx, claim, model, finished).await?;
    let outcome = AttemptOutcome::Cancelled;
    attempts::end(
        &mut *tx,
        claim.id,
        claim.attempt,
        outcome,
        Some(generated(finished)),
    )
    .await?;
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
    .bind(error.map(|e| e.code))
    .bind(error.map(|e| e.message.as_str()))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        tx.rollback().await?;
        attempts::refuse_write(pool, claim.id, claim.attempt, generated(results)).await?;
        return Ok(false);
    }
    generations::insert(&mut tx, claim, model, results).await?;
    let outcome = match status {
        JobStatus::Completed => AttemptOutcome::Completed,
        _ => AttemptOutcome::Failed,
    };
    attempts::end(
        &mut *tx,
        claim.id,
        claim.attempt,
        outcome,
        Some(generated(results)),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Results this attempt produced by inference (not from the result cache).
fn generated(results: &[NewGeneration]) -> i32 {
    results.iter().filter(|r| !r.cached).count() as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyFinal(JobStatus),
    NotFound,
}

/// Cancels a queued or running job if `scope` may see it (another tenant's job is `NotFound`, as
/// an unknown one). A running job's worker sees the status and stops.
pub async fn cancel(pool: &PgPool, id: Uuid, scope: Scope<'_>) -> sqlx::Result<CancelOutcome> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = $2,
                  error_message = 'cancelled on request'
           where id = $1 and status in ('queued', 'running')
             and ($3::text is null or tenant = $3)"#,
    )
    .bind(id)
    .bind(ErrorCode::Cancelled)
    .bind(scope.tenant())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        tx.commit().await?;
        return Ok(CancelOutcome::Cancelled);
    }
    tx.rollback().await?;
    Ok(match super::status_in(pool, id, scope).await? {
        Some(status) => CancelOutcome::AlreadyFinal(status),
        None => CancelOutcome::NotFound,
    })
}

/// Cancels every queued job; returns their ids so the caller can take them out of Redis.
pub async fn cancel_all_queued(
    pool: &PgPool,
    reason: &str,
    model: Option<&str>,
) -> sqlx::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = $2,
                  error_message = $1
           where status = 'queued' and ($3::text is null or routed_model = $3) returning id"#,
    )
    .bind(reason)
    .bind(ErrorCode::Cancelled)
    .bind(model)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids)
}
