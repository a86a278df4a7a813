//! Which apalis task carries each job through Redis (`jobs.dispatch_id`). A job's first dispatch
//! uses its own id; each re-dispatch takes a fresh one, recorded here before it is pushed.

use sqlx::PgPool;
use uuid::Uuid;

/// Gives each of these jobs that is still queued a fresh dispatch id; returns (job, dispatch,
/// claims so far) for those, to be pushed to Redis.
pub async fn renew(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, Uuid, i32)>> {
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
pub async fn of(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(r#"select dispatch_id from jobs where id = any($1)"#)
        .bind(job_ids)
        .fetch_all(pool)
        .await
}
