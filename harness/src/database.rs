//! Throwaway state: a database dropped and created afresh for each run, so figures and audits see
//! only that run's jobs, and a Redis namespace no earlier run used.

use anyhow::Context;
use sqlx::PgPool;
use uuid::Uuid;

/// A freshly recreated, migrated database.
pub struct Database {
    /// What the processes get as `DATABASE_URL`.
    pub url: String,
    /// The caller's own connections (a few: it only reads figures and waits on jobs).
    pub pool: PgPool,
}

impl Database {
    /// Drops database `name` on the server at `postgres` (a URL without a database) and creates it
    /// again, migrated. Never point this at the service's own database.
    pub async fn recreate(postgres: &str, name: &str) -> anyhow::Result<Database> {
        let url = format!("{}/{name}", postgres.trim_end_matches('/'));
        let pool = genq_shared::db::recreate(&url.parse()?, 4)
            .await
            .with_context(|| format!("recreating the throwaway database {name}"))?;
        Ok(Database { url, pool })
    }

    /// As [`Database::recreate`], with every table and index in `tablespace`: a small disk of its
    /// own, which the fault suite fills.
    pub async fn recreate_in_tablespace(
        postgres: &str,
        name: &str,
        tablespace: &str,
    ) -> anyhow::Result<Database> {
        use sqlx::migrate::MigrateDatabase;
        let server = postgres.trim_end_matches('/');
        let url = format!("{server}/{name}");
        sqlx::Postgres::force_drop_database(&url)
            .await
            .with_context(|| format!("dropping the throwaway database {name}"))?;
        let maintenance = sqlx::PgPool::connect(&format!("{server}/postgres")).await?;
        let created = sqlx::query(&format!(
            r#"create database "{name}" tablespace "{tablespace}""#
        ))
        .execute(&maintenance)
        .await;
        maintenance.close().await;
        created.with_context(|| format!("creating {name} in tablespace {tablespace}"))?;
        let pool = genq_shared::db::connect(&url.parse()?, 4).await?;
        genq_shared::db::migrate(&pool).await?;
        Ok(Database { url, pool })
    }

    /// As [`Database::recreate`], but empty: the binaries started on it migrate it. For an earlier
    /// build's binaries, which refuse a database this build migrated further.
    pub async fn recreate_unmigrated(postgres: &str, name: &str) -> anyhow::Result<Database> {
        use sqlx::migrate::MigrateDatabase;
        let url = format!("{}/{name}", postgres.trim_end_matches('/'));
        sqlx::Postgres::force_drop_database(&url)
            .await
            .with_context(|| format!("dropping the throwaway database {name}"))?;
        let pool = genq_shared::db::connect(&url.parse()?, 4).await?;
        Ok(Database { url, pool })
    }
}

/// `{prefix}_` and 8 random hex digits: a Redis namespace of its own, so tasks an earlier run left
/// behind are never delivered to this one.
pub fn fresh_queue(prefix: &str) -> String {
    format!("{prefix}_{}", &Uuid::new_v4().simple().to_string()[..8])
}
