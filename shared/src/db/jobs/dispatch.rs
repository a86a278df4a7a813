//! Which apalis task carries each job through Redis (`jobs.dispatch_id`). A job's first dispatch
//! uses its own id; each re-dispatch takes a fresh one, recorded here before it is pushed. And
//! the reconciler's window over dispatches to check against Redis.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::queue::{Lane, Priority};

/// A job's current delivery and where it waits: its model's queue and its lane there.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Renewed {
    pub job_id: Uuid,
    pub dispatch_id: Uuid,
    /// Claims so far (0 for a job never claimed).
    pub claims: i32,
    pub model: String,
    pub tenant: String,
    pub priority: i16,
}

impl Renewed {
    pub fn lane(&self) -> Lane<'_> {
        Lane {
            tenant: &self.tenant,
            priority: Priority::from_column(self.priority),
        }
    }
}

/// The model of a job recorded before routing existed: the default one (recorded on the job).
const ROUTED_MODEL: &str = "coalesce(j.routed_model, (select name from models where is_default))";

/// Gives each of these jobs that is still queued a fresh dispatch id, to be pushed to Redis.
/// Jobs without a model to go to (none registered) are left for a later pass.
pub async fn renew_dispatches(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<Vec<Renewed>> {
    let fresh: Vec<Uuid> = job_ids.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query_as(&format!(
        r#"update jobs j set dispatch_id = d.dispatch_id, queued_at = now(), undispatched = false,
                  routed_model = {ROUTED_MODEL},
                  requested_model = coalesce(j.requested_model, {ROUTED_MODEL})
           from unnest($1::uuid[], $2::uuid[]) as d(job_id, dispatch_id)
           where j.id = d.job_id and j.status = 'queued' and {ROUTED_MODEL} is not null
           returning j.id as job_id, j.dispatch_id, j.attempt as claims, j.routed_model as model,
                     j.tenant, j.priority"#
    ))
    .bind(job_ids)
    .bind(&fresh)
    .fetch_all(pool)
    .await
}

/// Whether a queued job waits without a model to go to: recorded before models existed, while no
/// default model is registered yet. The reconciler checks every queued job again until none does.
pub async fn unrouted_queued(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        r#"select exists (select 1 from jobs where status = 'queued' and routed_model is null)"#,
    )
    .fetch_one(pool)
    .await
}

/// The current deliveries of these jobs (those with a model).
pub async fn dispatches(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<Vec<Renewed>> {
    sqlx::query_as(&format!(
        r#"select * from (
               select j.id as job_id, j.dispatch_id, j.attempt as claims, {ROUTED_MODEL} as model,
                      j.tenant, j.priority
               from jobs j where j.id = any($1)) d
           where model is not null"#
    ))
    .bind(job_ids)
    .fetch_all(pool)
    .await
}

/// The queued jobs the reconciler checks against Redis in one pass: those (re)dispatched after
/// `from` (none: every queued job) and at least a grace period ago, so a push still under way
/// is not taken for a lost one.
#[derive(Debug, Clone, Copy)]
pub struct CheckWindow {
    pub from: Option<DateTime<Utc>>,
    pub until: DateTime<Utc>,
}

/// A queued job in the window: (job, dispatch, queued_at, model queue it waits in).
pub type QueuedDispatch = (Uuid, Uuid, DateTime<Utc>, Option<String>);

/// The dispatches since the last pass's window (from `overlap` before its end, a margin for a
/// transaction that committed late) up to `grace` ago, in PostgreSQL's clock; every queued job
/// up to then on the queue's first pass.
pub async fn window_since_last_pass(
    pool: &PgPool,
    queue: &str,
    grace: Duration,
    overlap: Duration,
) -> sqlx::Result<CheckWindow> {
    let (from, until) = sqlx::query_as(
        r#"select (select checked_until from reconciler_marks where queue = $1)
                      - make_interval(secs => $3),
                  now() - make_interval(secs => $2)"#,
    )
    .bind(queue)
    .bind(grace.as_secs_f64())
    .bind(overlap.as_secs_f64())
    .fetch_one(pool)
    .await?;
    Ok(CheckWindow { from, until })
}

/// Every queued job dispatched up to `grace` ago: after Redis lost its data.
pub async fn whole_window(pool: &PgPool, grace: Duration) -> sqlx::Result<CheckWindow> {
    let until = sqlx::query_scalar(r#"select now() - make_interval(secs => $1)"#)
        .bind(grace.as_secs_f64())
        .fetch_one(pool)
        .await?;
    Ok(CheckWindow { from: None, until })
}

/// Up to `limit` queued jobs of the window after `after`, in (queued_at, id) order: an index
/// range scan of `jobs_queued_at`, whatever the backlog.
pub async fn queued_in_window(
    pool: &PgPool,
    window: &CheckWindow,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<QueuedDispatch>> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as(
        r#"select id, dispatch_id, queued_at, routed_model from jobs
           where status = 'queued'
             and queued_at > coalesce($1, '-infinity') and queued_at <= $2
             and (queued_at, id) > (coalesce($3, '-infinity'), coalesce($4, '00000000-0000-0000-0000-000000000000'))
           order by queued_at, id limit $5"#,
    )
    .bind(window.from)
    .bind(window.until)
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records that the queued jobs up to `until` have been checked.
pub async fn set_checked_until(
    pool: &PgPool,
    queue: &str,
    until: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into reconciler_marks (queue, checked_until) values ($1, $2)
           on conflict (queue) do update set checked_until = excluded.checked_until"#,
    )
    .bind(queue)
    .bind(until)
    .execute(pool)
    .await?;
    Ok(())
}

/// Which of these dispatches still carry a queued job: deliveries apalis finished with although
/// the job never ran (a worker that kept failing to reach PostgreSQL, say).
pub async fn queued_with_dispatch(pool: &PgPool, dispatch_ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(r#"select id from jobs where status = 'queued' and dispatch_id = any($1)"#)
        .bind(dispatch_ids)
        .fetch_all(pool)
        .await
}

/// Clears the undispatched mark of jobs Redis turned out to hold.
pub async fn clear_undispatched(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(r#"update jobs set undispatched = false where id = any($1)"#)
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks recorded jobs whose push to Redis failed, so the reconciler's next pass dispatches them.
pub async fn mark_undispatched(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query(r#"update jobs set undispatched = true where id = any($1) and status = 'queued'"#)
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
}

/// Up to `limit` queued jobs marked undispatched, with their dispatch ids and models.
pub async fn undispatched(
    pool: &PgPool,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, Uuid, Option<String>)>> {
    sqlx::query_as(
        r#"select id, dispatch_id, routed_model from jobs where undispatched and status = 'queued'
           limit $1"#,
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
