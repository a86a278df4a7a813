//! The worker registry: each worker process registers and heartbeats here, so operators see live
//! workers whatever Redis holds.

use chrono::{DateTime, Utc};

use crate::types::WorkerOverview;
use serde::Serialize;
use sqlx::PgPool;

/// A worker is live while its heartbeat is younger than this many seconds.
pub const LIVE_WITHIN_SECS: i32 = 15;

/// The condition on `workers` for a live worker, with [`LIVE_WITHIN_SECS`] bound as `$1`: one
/// text for every query, so the dashboard and the registry agree on who is live.
macro_rules! live_where {
    () => {
        "stopped_at is null and last_seen > now() - make_interval(secs => $1)"
    };
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WorkerRow {
    pub name: String,
    pub hostname: String,
    pub pid: i32,
    pub model: String,
    pub slots: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

pub async fn register(
    pool: &PgPool,
    name: &str,
    hostname: &str,
    pid: i32,
    model: &str,
    slots: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into workers (name, hostname, pid, model, slots) values ($1, $2, $3, $4, $5)
           on conflict (name) do update set hostname = excluded.hostname, pid = excluded.pid,
               model = excluded.model, slots = excluded.slots, started_at = now(), last_seen = now(),
               stopped_at = null"#,
    )
    .bind(name)
    .bind(hostname)
    .bind(pid)
    .bind(model)
    .bind(slots)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a heartbeat reports of the worker's engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub slots_busy: i32,
    pub generated_tokens: i64,
}

/// Marks the worker alive, with its engine's figures.
pub async fn heartbeat(pool: &PgPool, name: &str, figures: Figures) -> sqlx::Result<()> {
    sqlx::query(
        r#"update workers set last_seen = now(), slots_busy = $2, generated_tokens = $3
           where name = $1"#,
    )
    .bind(name)
    .bind(figures.slots_busy)
    .bind(figures.generated_tokens)
    .execute(pool)
    .await?;
    Ok(())
}

/// Live workers with their figures and running jobs, for the dashboard.
pub async fn overview(pool: &PgPool) -> sqlx::Result<Vec<WorkerOverview>> {
    sqlx::query_as(concat!(
        r#"select w.name, w.hostname, w.model, w.slots, w.slots_busy, w.generated_tokens,
                  (select count(*) from jobs j where j.status = 'running' and j.worker = w.name)
                      as jobs_running,
                  extract(epoch from now() - w.last_seen)::float8 as heartbeat_age_secs
           from workers w
           where "#,
        live_where!(),
        r#"
           order by w.name"#
    ))
    .bind(LIVE_WITHIN_SECS as f64)
    .fetch_all(pool)
    .await
}

pub async fn mark_stopped(pool: &PgPool, name: &str) -> sqlx::Result<()> {
    sqlx::query(r#"update workers set stopped_at = now() where name = $1"#)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn live(pool: &PgPool) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(concat!(
        r#"select name, hostname, pid, model, slots, started_at, last_seen from workers
           where "#,
        live_where!(),
        r#"
           order by name"#
    ))
    .bind(LIVE_WITHIN_SECS as f64)
    .fetch_all(pool)
    .await
}
