//! PostgreSQL: connecting (creating the database if missing), migrations, and the data access of
//! each table. All SQL of the project lives in this module.

pub mod control;
pub mod dispatches;
pub mod generations;
pub mod idempotency;
pub mod jobs;
pub mod recovery;
pub mod workers;

use std::time::Duration;

use anyhow::Context;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::PgPoolOptions,
};

use crate::config::SecretUrl;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Notification channel a job's id is sent on when it reaches a final status.
pub const FINAL_CHANNEL: &str = "genq_job_final";

/// Connects, creating the database first if it does not exist. Does not migrate.
pub async fn connect(url: &SecretUrl, max_connections: u32) -> anyhow::Result<PgPool> {
    let exists = Postgres::database_exists(url.expose())
        .await
        .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
    if !exists {
        tracing::info!(%url, "creating the database");
        if let Err(e) = Postgres::create_database(url.expose()).await {
            // Another process may have created it in between; only fail if it is still missing.
            if !Postgres::database_exists(url.expose())
                .await
                .unwrap_or(false)
            {
                return Err(e).with_context(|| format!("creating the database at {url}"));
            }
        }
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url.expose())
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url}"))
}

/// Applies pending migrations; concurrent callers are serialised by sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Drops the database (ending its sessions) and creates it afresh, migrated: for throwaway
/// databases such as the benchmark's and the fault suite's, never the service's own.
pub async fn recreate(url: &SecretUrl, max_connections: u32) -> anyhow::Result<PgPool> {
    Postgres::force_drop_database(url.expose())
        .await
        .with_context(|| format!("dropping the database at {url}"))?;
    let pool = connect(url, max_connections).await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Whether the error means PostgreSQL could not be reached or is restarting (worth answering 503
/// and retrying), rather than a fault in the query or the data.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE classes 08 (connection exception), 53 (insufficient resources: too many
        // connections) and 57 (operator intervention: shutting down, starting up).
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| ["08", "53", "57"].iter().any(|c| code.starts_with(c))),
        _ => false,
    }
}
