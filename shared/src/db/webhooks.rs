//! Webhook deliveries: owed by a trigger as a job with a `callback_url` turns final (see the
//! migration), taken by the API's deliverers under a lease, and every attempt recorded.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A delivery taken for one attempt. Until [`record_attempt`] it is leased: should its deliverer
/// die, another takes it once the lease ends. (`Debug` by hand: it holds a secret, and a URL
/// whose path and query may carry the receiver's tokens.)
#[derive(Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub job_id: Uuid,
    pub url: String,
    /// Which outcome of the job this is (a retried job owes a second one).
    pub round: i32,
    /// This attempt's number, counted over every round; also its lease.
    pub attempt: i32,
    /// This attempt's number within its round.
    pub round_attempt: i32,
    pub owed_at: DateTime<Utc>,
    /// The submitting key's own signing secret, if it has one.
    pub key_secret: Option<String>,
    /// The job's tenant, and the URL's scheme, host and port (`http://h:8080`): what delivery is
    /// made fair by.
    pub tenant: String,
    pub destination: String,
}

impl std::fmt::Debug for DueDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueDelivery")
            .field("job_id", &self.job_id)
            .field("round", &self.round)
            .field("attempt", &self.attempt)
            .field("tenant", &self.tenant)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// Takes up to `limit` due deliveries, each leased for `lease`: the earliest due one of each
/// tenant's destination, then of those the earliest of each tenant, so that one call takes at most
/// one delivery per tenant (a deliverer calls again to fill more slots: round robin). Tenants and
/// tenants' destinations in `skip` (at their cap, or paused) are passed over. Several deliverers
/// (API replicas) never take the same one: `skip locked`.
pub async fn take_due(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
    skip: &Skip,
) -> sqlx::Result<Vec<DueDelivery>> {
    sqlx::query_as(
        r#"with first_per_destination as (
               select distinct on (tenant, destination) job_id, tenant, next_attempt_at
               from webhook_deliveries w
               where delivered_at is null and gave_up_at is null and next_attempt_at <= now()
                 and tenant <> all($3)
                 and not exists (select 1 from unnest($4::text[], $5::text[]) s (tenant, destination)
                                 where s.tenant = w.tenant and s.destination = w.destination)
               order by tenant, destination, next_attempt_at
           ), first_per_tenant as (
               select distinct on (tenant) job_id, next_attempt_at
               from first_per_destination
               order by tenant, next_attempt_at
           )
           update webhook_deliveries d
           set attempts = d.attempts + 1, round_attempts = d.round_attempts + 1,
               next_attempt_at = now() + make_interval(secs => $2)
           from (select w.job_id from webhook_deliveries w join first_per_tenant f using (job_id)
                 where w.delivered_at is null and w.gave_up_at is null
                   and w.next_attempt_at <= now()
                 order by f.next_attempt_at limit $1
                 for update of w skip locked) due
           where d.job_id = due.job_id
           returning d.job_id, d.url, d.round, d.attempts as attempt,
                     d.round_attempts as round_attempt, d.owed_at, d.tenant, d.destination,
                     (select k.webhook_secret from jobs j join api_keys k on k.id = j.api_key_id
                      where j.id = d.job_id) as key_secret"#,
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .bind(&skip.tenants)
    .bind(&skip.tenants_of)
    .bind(&skip.destinations)
    .fetch_all(pool)
    .await
}

/// What [`take_due`] passes over: whole tenants, and destinations of a tenant (`tenants_of[i]`'s
/// `destinations[i]`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skip {
    pub tenants: Vec<String>,
    pub tenants_of: Vec<String>,
    pub destinations: Vec<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration: Duration,
    pub delivered: bool,
}

/// What became of the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Delivered,
    /// Tried again after the given delay.
    Retrying,
    /// Owed longer than the retry window allows: no more attempts.
    GaveUp,
    /// Meanwhile the job was deleted, owes a newer outcome, or (the lease having run out)
    /// another deliverer took the delivery: this attempt is recorded, nothing else changes.
    Gone,
}

/// Records an attempt and what follows it: delivered, retried after `retry_in`, or given up when
/// the next try would fall past `retry_for` from when the outcome became owed.
pub async fn record_attempt(
    pool: &PgPool,
    due: &DueDelivery,
    outcome: &AttemptOutcome,
    retry_in: Duration,
    retry_for: Duration,
) -> sqlx::Result<Standing> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        r#"insert into webhook_attempts (job_id, attempt, round, status_code, error, duration_ms)
           select $1, $2, $3, $4, $5, $6 where exists (select 1 from jobs where id = $1)"#,
    )
    .bind(due.job_id)
    .bind(due.attempt)
    .bind(due.round)
    .bind(outcome.status_code.map(i32::from))
    .bind(&outcome.error)
    .bind(outcome.duration.as_millis().min(i32::MAX as u128) as i32)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(Standing::Gone);
    }
    let standing: Option<String> = sqlx::query_scalar(
        r#"update webhook_deliveries
           set delivered_at = case when $3 then now() end,
               gave_up_at = case when not $3 and now() + make_interval(secs => $4)
                                     > owed_at + make_interval(secs => $5)
                                 then now() end,
               next_attempt_at = now() + make_interval(secs => $4)
           where job_id = $1 and round = $2 and attempts = $6
             and delivered_at is null and gave_up_at is null
           returning case when delivered_at is not null then 'delivered'
                          when gave_up_at is not null then 'gave_up'
                          else 'retrying' end"#,
    )
    .bind(due.job_id)
    .bind(due.round)
    .bind(outcome.delivered)
    .bind(retry_in.as_secs_f64())
    .bind(retry_for.as_secs_f64())
    .bind(due.attempt)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match standing.as_deref() {
        Some("delivered") => Standing::Delivered,
        Some("gave_up") => Standing::GaveUp,
        Some(_) => Standing::Retrying,
        None => Standing::Gone,
    })
}

/// Deliveries still owed, for `GET /metrics`.
pub async fn owed_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from webhook_deliveries where delivered_at is null and gave_up_at is null"#,
    )
    .fetch_one(pool)
    .await
}

/// Whether the key has a signing secret of its own.
pub async fn key_has_secret(pool: &PgPool, key_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(r#"select webhook_secret is not null from api_keys where id = $1"#)
        .bind(key_id)
        .fetch_optional(pool)
        .await
        .map(|has| has.unwrap_or(false))
}

/// Sets (or, with `None`, removes) the signing secret of the live key named `name`; false when
/// there is no such key.
pub async fn set_key_secret(pool: &PgPool, name: &str, secret: Option<&str>) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        r#"update api_keys set webhook_secret = $2 where name = $1 and revoked_at is null"#,
    )
    .bind(name)
    .bind(secret)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(updated == 1)
}
