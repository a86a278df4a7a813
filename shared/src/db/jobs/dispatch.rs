//! Which apalis task carries each job through Redis (`jobs.dispatch_id`). A job's first dispatch
//! uses its own id; each re-dispatch takes a fresh one, recorded here before it is pushed.

use sqlx::PgPool;
use uuid::Uuid;

/// Gives each of these jobs that is still queued a fresh dispatch id; returns (job, dispatch,
/// claims so far) for those, to be pushed to Redis.
pub async fn renew_dispatches(
    pool: &PgPool,
    job_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Uuid, i32)>> {
    let fresh: Vec<Uuid> = job_ids.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query_as(
        r#"update jobs j set dispatch_id = d.dispatch_id
           from unnest($1::uuid[], $2::uuid[]) as d(job_id, dispatch_id)
           where j.id = d.job_id and j.status = 'queued'
           returning j.id, j.dispatch_id, j.attempt"#,
    )
    .bind(job_ids)
    .bind(&fresh)
    .fetch_all(pool)
    .await
}

/// The current dispatch ids of these jobs.
pub async fn dispatch_ids(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(r#"select dispatch_id from jobs where id = any($1)"#)
        .bind(job_ids)
        .fetch_all(pool)
        .await
}

/// Marks a recorded job whose push to Redis failed as never dispatched, so the reconciler's next
/// pass dispatches it (it checks queued jobs in `queued_at` order).
pub async fn mark_undispatched(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(r#"update jobs set queued_at = 'epoch' where id = $1 and status = 'queued'"#)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}
