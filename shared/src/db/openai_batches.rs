//! Batches of OpenAI's Batch API (`/v1/batches`). A batch is a row here and one row per request
//! line in `openai_batch_requests`, naming the genq jobs the line became. API replicas move a
//! batch through its states ([`take_due`] hands each step to one replica at a time).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, types::Json};
use uuid::Uuid;

use super::Scope;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    pub tenant: String,
    pub api_key_id: Option<Uuid>,
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub metadata: Option<Json<Value>>,
    pub status: String,
    pub errors: Option<Json<Value>>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub total: i32,
    pub completed: i32,
    pub failed: i32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub in_progress_at: Option<DateTime<Utc>>,
    pub finalizing_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelling_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant, api_key_id, endpoint, input_file_id, completion_window, \
    metadata, status, errors, output_file_id, error_file_id, total, completed, failed, created_at, \
    expires_at, \
    in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at";

/// A new batch id, in OpenAI's form (`batch_` and 32 hex digits), ordered by creation.
pub fn new_id() -> String {
    format!("batch_{}", Uuid::now_v7().simple())
}

pub struct NewBatch<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub api_key_id: Option<Uuid>,
    pub endpoint: &'a str,
    pub input_file_id: &'a str,
    pub completion_window: &'a str,
    pub window: Duration,
    pub metadata: Option<&'a Value>,
}

pub async fn insert(pool: &PgPool, batch: NewBatch<'_>) -> sqlx::Result<BatchRow> {
    sqlx::query_as(&format!(
        r#"insert into openai_batches (id, tenant, api_key_id, endpoint, input_file_id,
                                       completion_window, metadata, expires_at)
           values ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
           returning {COLUMNS}"#
    ))
    .bind(batch.id)
    .bind(batch.tenant)
    .bind(batch.api_key_id)
    .bind(batch.endpoint)
    .bind(batch.input_file_id)
    .bind(batch.completion_window)
    .bind(batch.metadata.map(Json))
    .bind(batch.window.as_secs_f64())
    .fetch_one(pool)
    .await
}

pub async fn get(pool: &PgPool, id: &str, scope: Scope<'_>) -> sqlx::Result<Option<BatchRow>> {
    sqlx::query_as(&format!(
        r#"select {COLUMNS} from openai_batches
           where id = $1 and ($2::text is null or tenant = $2)"#
    ))
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(pool)
    .await
}

/// Batches `scope` may see, newest first, after the batch `after`.
pub async fn list(
    pool: &PgPool,
    scope: Scope<'_>,
    limit: i64,
    after: Option<&str>,
) -> sqlx::Result<Vec<BatchRow>> {
    sqlx::query_as(&format!(
        r#"select {COLUMNS} from openai_batches
           where ($1::text is null or tenant = $1) and ($3::text is null or id < $3)
           order by id desc limit $2"#
    ))
    .bind(scope.tenant())
    .bind(limit)
    .bind(after)
    .fetch_all(pool)
    .await
}

/// A batch with a step to take (validating, running, finalizing, cancelling) whose lease has
/// lapsed, now leased to the caller for `lease`. Batches waiting for their jobs are handed out
/// again once [`release`] lets their lease lapse.
pub async fn take_due(pool: &PgPool, lease: Duration) -> sqlx::Result<Option<BatchRow>> {
    sqlx::query_as(&format!(
        r#"update openai_batches set lease_until = now() + make_interval(secs => $1)
           where id = (select id from openai_batches
                       where status in ('validating', 'in_progress', 'finalizing', 'cancelling')
                         and (lease_until is null or lease_until < now())
                       order by lease_until nulls first
                       limit 1 for update skip locked)
           returning {COLUMNS}"#
    ))
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
}

/// Hands the batch back, to be taken again after `after`.
pub async fn release(pool: &PgPool, id: &str, after: Duration) -> sqlx::Result<()> {
    sqlx::query(
        r#"update openai_batches set lease_until = now() + make_interval(secs => $2)
           where id = $1"#,
    )
    .bind(id)
    .bind(after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(())
}

/// Validation failed: the batch is `failed` with `errors` and records nothing else.
pub async fn fail(pool: &PgPool, id: &str, errors: &Value) -> sqlx::Result<()> {
    sqlx::query(
        r#"update openai_batches set status = 'failed', failed_at = now(), errors = $2,
                  lease_until = null
           where id = $1 and status = 'validating'"#,
    )
    .bind(id)
    .bind(Json(errors))
    .execute(pool)
    .await?;
    Ok(())
}

/// One request line of a batch, as validation turned it into jobs.
pub struct NewRequest<'a> {
    pub line: i32,
    pub custom_id: &'a str,
    pub request: &'a Value,
    pub job_ids: &'a [Uuid],
}

/// Records the batch's request lines (whose jobs the caller inserted in the same transaction)
/// and starts it: `in_progress`. False, recording nothing, if the batch is no longer validating
/// (a cancel came first).
pub async fn start(
    conn: &mut PgConnection,
    id: &str,
    requests: &[NewRequest<'_>],
) -> sqlx::Result<bool> {
    let status: Option<String> =
        sqlx::query_scalar(r#"select status from openai_batches where id = $1 for update"#)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    if status.as_deref() != Some("validating") {
        return Ok(false);
    }
    let lines: Vec<i32> = requests.iter().map(|r| r.line).collect();
    let custom_ids: Vec<&str> = requests.iter().map(|r| r.custom_id).collect();
    let bodies: Vec<Json<&Value>> = requests.iter().map(|r| Json(r.request)).collect();
    // Postgres arrays of arrays must be rectangular: the job ids travel as text.
    let job_ids: Vec<String> = requests
        .iter()
        .map(|r| {
            let ids: Vec<String> = r.job_ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        })
        .collect();
    sqlx::query(
        r#"insert into openai_batch_requests (batch_id, line, custom_id, request, job_ids)
           select $1, line, custom_id, request, job_ids::uuid[]
           from unnest($2::int[], $3::text[], $4::jsonb[], $5::text[])
               as t(line, custom_id, request, job_ids)"#,
    )
    .bind(id)
    .bind(&lines)
    .bind(&custom_ids)
    .bind(&bodies)
    .bind(&job_ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"update openai_batches
           set status = 'in_progress', in_progress_at = now(), total = $2
           where id = $1"#,
    )
    .bind(id)
    .bind(requests.len() as i32)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// `request_counts`: lines in all, lines whose every job completed, lines with a job that
/// failed or was cancelled and none still to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Counts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// Counts the batch's lines from its jobs' statuses and stores the counts on the batch (what
/// `GET /v1/batches` answers), in one statement.
pub async fn refresh_counts(pool: &PgPool, id: &str) -> sqlx::Result<Counts> {
    sqlx::query_as(
        r#"with counted as (
               select count(*) as total,
                  count(*) filter (where done = jobs and ok = jobs) as completed,
                  count(*) filter (where done = jobs and ok < jobs) as failed
           from (select cardinality(r.job_ids) as jobs,
                        count(j.id) filter (where j.status in ('completed', 'failed', 'cancelled'))
                            as done,
                        count(j.id) filter (where j.status = 'completed') as ok
                 from openai_batch_requests r
                 left join jobs j on j.id = any(r.job_ids)
                 where r.batch_id = $1
                 group by r.line, r.job_ids) per_line)
           update openai_batches b
           set completed = counted.completed, failed = counted.failed
           from counted where b.id = $1
           returning counted.total, counted.completed, counted.failed"#,
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// Jobs of the batch still queued or running (a partial index holds exactly those).
pub async fn unfinished_jobs(pool: &PgPool, id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from jobs
           where openai_batch_id = $1 and status in ('queued', 'running')"#,
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// Asks for the batch to be cancelled: `cancelling` from `validating` or `in_progress`. The
/// lease is left alone: a replica holding the batch sees the cancel at its next step, and two
/// replicas never work on one batch at once. Returns the batch's status after the request, `None` if `scope` sees no such batch.
pub async fn request_cancel(
    pool: &PgPool,
    id: &str,
    scope: Scope<'_>,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        r#"update openai_batches
           set status = case when status in ('validating', 'in_progress') then 'cancelling'
                             else status end,
               cancelling_at = case when status in ('validating', 'in_progress') then now()
                                    else cancelling_at end
           where id = $1 and ($2::text is null or tenant = $2)
           returning status"#,
    )
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(pool)
    .await
}

/// Cancels the batch's queued and running jobs (finished ones keep their results); returns the
/// ids cancelled, to take them out of Redis.
pub async fn cancel_jobs(pool: &PgPool, id: &str, reason: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        r#"update jobs set status = 'cancelled', finished_at = now(), error_code = 'cancelled',
                  error_message = $2
           where openai_batch_id = $1 and status in ('queued', 'running')
           returning id"#,
    )
    .bind(id)
    .bind(reason)
    .fetch_all(pool)
    .await
}

/// Marks the batch `finalizing` (from `in_progress` or `cancelling`).
pub async fn set_finalizing(pool: &PgPool, id: &str) -> sqlx::Result<()> {
    sqlx::query(
        r#"update openai_batches set finalizing_at = coalesce(finalizing_at, now()),
                  status = case when status = 'in_progress' then 'finalizing' else status end
           where id = $1"#,
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// The batch's end, in the transaction that wrote its output and error files: `completed`,
/// `expired` or `cancelled`. False if it had already ended (the caller rolls its files back).
pub async fn finish(
    conn: &mut PgConnection,
    id: &str,
    status: &str,
    output_file_id: Option<&str>,
    error_file_id: Option<&str>,
) -> sqlx::Result<bool> {
    let stamp = match status {
        "completed" => "completed_at",
        "expired" => "expired_at",
        _ => "cancelled_at",
    };
    let updated = sqlx::query(&format!(
        r#"update openai_batches set status = $2, {stamp} = now(), output_file_id = $3,
                  error_file_id = $4, lease_until = null
           where id = $1 and status in ('in_progress', 'finalizing', 'cancelling')"#
    ))
    .bind(id)
    .bind(status)
    .bind(output_file_id)
    .bind(error_file_id)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// One request line with its jobs, for the output files.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestLine {
    pub line: i32,
    pub custom_id: String,
    pub request: Json<Value>,
    pub job_ids: Vec<Uuid>,
}

/// The batch's request lines after `after_line`, in line order.
pub async fn lines(
    pool: &PgPool,
    id: &str,
    after_line: i32,
    limit: i64,
) -> sqlx::Result<Vec<RequestLine>> {
    sqlx::query_as(
        r#"select line, custom_id, request, job_ids from openai_batch_requests
           where batch_id = $1 and line > $2 order by line limit $3"#,
    )
    .bind(id)
    .bind(after_line)
    .bind(limit)
    .fetch_all(pool)
    .await
}
