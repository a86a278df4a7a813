//! What the reconciler and operators need to bring jobs back: jobs held by workers that stopped
//! heartbeating, queued jobs past their deadline, the dead list and its retry, and removal of
//! finished jobs past retention. (Jobs Redis may have lost: `dispatch`.)

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::{
        attempts::{self, AttemptOutcome},
        generations,
    },
    types::{ErrorCode, JobStatus, JobSummary},
};

/// Running jobs whose lease has not been renewed for `stale_after` (their worker died, or does not
/// know it holds them) or whose worker has stopped or is unknown, with the attempt they are at.
pub async fn abandoned(pool: &PgPool, stale_after: Duration) -> sqlx::Result<Vec<(Uuid, i32)>> {
    sqlx::query_as(
        r#"select j.id, j.attempt from jobs j left join workers w on w.name = j.worker
           where j.status = 'running'
             and (w.name is null or w.stopped_at is not null
                  or coalesce(j.lease_renewed_at, j.started_at) < now() - make_interval(secs => $1))"#,
    )
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// What became of a job taken back from a lost claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Back to queued: the caller dispatches it again.
    Requeued,
    /// Out of attempts: failed for good.
    Failed,
    /// The claim was no longer current (finished, cancelled or claimed again meanwhile).
    Stale,
}

/// Takes a job back from the claim `attempt`: queued again while attempts remain, else failed
/// with `code` and `message`. A job out of attempts on its model for an engine failure
/// ([`falls_back_for`]) that has a fallback model is queued again there instead, with as many
/// attempts again (the caller dispatches it to the model it now names). Finished results of the
/// lost attempt are discarded: the next one runs every prompt.
pub async fn release(
    pool: &PgPool,
    id: Uuid,
    attempt: i32,
    code: ErrorCode,
    message: &str,
) -> sqlx::Result<Released> {
    let mut tx = pool.begin().await?;
    let row: Option<(JobStatus, Option<String>)> = sqlx::query_as(
        r#"update jobs j set
               status = case when j.attempt < j.max_attempts or f.fall_back then 'queued'
                             else 'failed' end,
               routed_model = case when f.fall_back then j.fallback_model else j.routed_model end,
               fallback_reason = case when f.fall_back
                   then 'failed on ' || j.routed_model || ': ' || $4 else j.fallback_reason end,
               max_attempts = case when f.fall_back then j.attempt + j.max_attempts
                                   else j.max_attempts end,
               queued_at = now(), enqueued_at = now(),
               finished_at = case when j.attempt < j.max_attempts or f.fall_back then null
                                  else now() end,
               error_code = $3,
               error_message = case when j.attempt < j.max_attempts or f.fall_back then $4
                                    else $4 || ' (gave up after ' || j.attempt || ' attempts)' end
           from (select id, attempt >= max_attempts and $5 and fallback_model is not null
                            and routed_model is distinct from fallback_model as fall_back
                 from jobs where id = $1) f
           where j.id = f.id and j.attempt = $2 and j.status = 'running'
           returning j.status, case when f.fall_back then j.fallback_model end"#,
    )
    .bind(id)
    .bind(attempt)
    .bind(code)
    .bind(message)
    .bind(falls_back_for(code))
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        attempts::end(&mut *tx, id, attempt, AttemptOutcome::Released, None).await?;
    }
    let released = match row {
        None => Released::Stale,
        Some((JobStatus::Queued, fallback)) => {
            generations::delete_of_jobs(&mut *tx, &[id]).await?;
            if let Some(fallback) = fallback {
                crate::metrics::fell_back(&fallback, "failed");
                tracing::warn!(task_id = %id, %fallback, "job moved to its fallback model");
            }
            Released::Requeued
        }
        Some(_) => Released::Failed,
    };
    tx.commit().await?;
    Ok(released)
}

/// The failures that send a job out of attempts to its fallback model: the model's engine failed
/// it, not the job's own input or a deadline.
pub fn falls_back_for(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InferenceError | ErrorCode::WorkerStopped | ErrorCode::WorkerLost
    )
}

/// Moves queued jobs that waited longer than their fallback's patience for a model no worker
/// served for as long to their fallback model; returns (job, fallback model) for dispatch there.
/// An index range of `jobs_queued_with_fallback`: jobs without a fallback cost nothing.
pub async fn fall_back_unserved(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        r#"update jobs set routed_model = fallback_model, queued_at = now(),
                  fallback_reason = 'no live worker of ' || routed_model || ' for '
                                    || fallback_after_secs || ' s'
           where id in (
               select j.id from jobs j
               where j.status = 'queued' and j.fallback_model is not null
                 and j.fallback_after_secs is not null
                 and j.routed_model is distinct from j.fallback_model
                 and j.enqueued_at < now() - make_interval(secs => j.fallback_after_secs)
                 -- No worker of the model seen for that long either: a worker restarting (its
                 -- model briefly without one) does not send the backlog away.
                 and not exists (select 1 from workers w
                                 where w.model = j.routed_model
                                   and w.last_seen > now() - make_interval(
                                       secs => greatest(j.fallback_after_secs, $2)))
               order by j.enqueued_at limit $1
               for update skip locked)
           returning id, routed_model"#,
    )
    .bind(limit)
    .bind(crate::db::workers::LIVE_WITHIN_SECS)
    .fetch_all(pool)
    .await
}

/// Up to `batch` queued jobs past their deadline end failed with code `timeout`; returns their
/// ids. In batches so that a backlog whose deadline passed at once (a million jobs submitted
/// together) is not one transaction locking it all.
pub async fn expire_queued(pool: &PgPool, batch: i64) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        r#"update jobs set status = 'failed', finished_at = now(), error_code = $1,
                  error_message = 'the deadline passed before a worker took the job'
           where id in (select id from jobs where status = 'queued' and deadline < now()
                        order by deadline limit $2 for update skip locked)
           returning id"#,
    )
    .bind(ErrorCode::Timeout)
    .bind(batch)
    .fetch_all(pool)
    .await
}

/// Jobs, newest first, optionally of one status.
pub async fn list(
    pool: &PgPool,
    status: Option<JobStatus>,
    limit: i64,
) -> sqlx::Result<Vec<JobSummary>> {
    // Two statements, not `$1 is null or status = $1`: each is an index range (jobs_created_at,
    // jobs_status_created_at) however many jobs are kept, where that one sorted every job.
    let query = match status {
        None => sqlx::query_as(
            r#"select id, status, prompt_count, attempt, error_code, error_message, created_at, finished_at
               from jobs order by created_at desc limit $1"#,
        ),
        Some(status) => sqlx::query_as(
            r#"select id, status, prompt_count, attempt, error_code, error_message, created_at, finished_at
               from jobs where status = $1 order by created_at desc limit $2"#,
        )
        .bind(status),
    };
    query.bind(limit).fetch_all(pool).await
}

/// Puts failed jobs back to queued with fresh attempts and deadline; their partial results go.
/// `None` retries every failed job. Returns the ids to dispatch.
pub async fn retry_failed(pool: &PgPool, id: Option<Uuid>) -> sqlx::Result<Vec<Uuid>> {
    let mut tx = pool.begin().await?;
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r#"update jobs set status = 'queued', attempt = 0, worker = null, error_code = null,
                  error_message = null, started_at = null, finished_at = null, queued_at = now(),
                  enqueued_at = now(),
                  deadline = now() + (deadline - created_at)
           where status = 'failed' and ($1::uuid is null or id = $1) returning id"#,
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    generations::delete_of_jobs(&mut *tx, &ids).await?;
    tx.commit().await?;
    Ok(ids)
}

/// Deletes finished jobs (and their results and idempotency keys) finished over `older_than`
/// ago, a batch at a time; returns their ids.
pub async fn delete_finished(
    pool: &PgPool,
    older_than: Duration,
    batch: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        r#"delete from jobs where id in (
               select id from jobs
               where status in ('completed', 'failed', 'cancelled')
                 and finished_at < now() - make_interval(secs => $1)
               order by finished_at limit $2)
           returning id"#,
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .fetch_all(pool)
    .await
}

/// Renews the leases of the running jobs `worker` holds, given as (job, attempt, prompts
/// generated so far); the progress goes to their attempts. A (job, attempt) pair, not the job
/// alone: a stale attempt of a job in the same process must not renew, or stop renewing, the live
/// one's lease.
pub async fn renew_leases(
    pool: &PgPool,
    worker: &str,
    held: &[(Uuid, i32, i32)],
) -> sqlx::Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    let jobs: Vec<Uuid> = held.iter().map(|h| h.0).collect();
    let attempts: Vec<i32> = held.iter().map(|h| h.1).collect();
    let mut tx = pool.begin().await?;
    sqlx::query(
        r#"update jobs j set lease_renewed_at = now()
           from unnest($2::uuid[], $3::int[]) as h(id, attempt)
           where j.id = h.id and j.attempt = h.attempt and j.worker = $1 and j.status = 'running'"#,
    )
    .bind(worker)
    .bind(jobs)
    .bind(attempts)
    .execute(&mut *tx)
    .await?;
    attempts::report_progress(&mut *tx, held).await?;
    tx.commit().await
}
