//! PostgreSQL: connecting (creating the database if missing, or only to one that exists),
//! migrations and where a database stands against them, and the data access of each table. All
//! SQL of the services, genqctl, the benchmark and the fault suite lives in this module; only the
//! tests add a few statements of their own, to put rows in states that are slow to reach.

pub mod attempts;
pub mod control;
pub mod files;
pub mod generations;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod models;
pub mod openai_batches;
pub mod webhooks;
pub mod workers;

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::config::SecretUrl;

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Whose jobs and results a query may see: one tenant's, or every tenant's (admin keys,
/// operators' tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    All,
    Tenant(&'a str),
}

impl<'a> Scope<'a> {
    /// The tenant to filter on, for SQL's `$n::text is null or tenant = $n`.
    pub fn tenant(self) -> Option<&'a str> {
        match self {
            Scope::All => None,
            Scope::Tenant(tenant) => Some(tenant),
        }
    }
}

/// Notification channel a job's id is sent on whenever its status changes (a trigger does it; see
/// the migration `job_status_notify`).
pub const STATUS_CHANNEL: &str = "genq_job_status";

/// Notification channel told of every change to `api_keys` (a trigger does it; see the migration
/// `key_changes_notify`), so that an API drops the keys it has cached.
pub const KEY_CHANNEL: &str = "genq_key_changes";

/// A session left idle inside a transaction this long is ended by PostgreSQL, and its locks go
/// with it. A process cut off mid-transaction (a partition: its connection neither answers nor
/// closes) would otherwise keep the rows it wrote locked until TCP gives up on the link, hours
/// later, and every write to them would wait as long: the reconciler's taking back of the jobs
/// of that very process included. genq never waits on anything else this long inside a
/// transaction; the reconciler's lock, held across a pass, is kept busy (`jobs::ReconcilerLock`).
pub const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// How PostgreSQL probes a genq session gone quiet: after `idle` without traffic, a probe every
/// `interval`; `count` unanswered and it ends the session. A process cut off by a partition cannot
/// close its sessions, and one that gave up on them meanwhile never will: without probes the
/// server keeps them, and their connection slots, for the kernel's default two hours: in the
/// fault suite's first hour of partitions, leftovers took 30 of PostgreSQL's 100 slots.
pub const SERVER_KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(30),
    interval: Duration::from_secs(10),
    count: 3,
};

/// TCP keepalive probes, and how long data sent may go unacknowledged: probes only run while
/// nothing sent waits for an answer (a notification to a cut-off listener does), so that wait is
/// bounded alike (`tcp_user_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
}

impl Keepalive {
    /// When a peer that answers nothing is given up: after the idle time and every probe.
    pub const fn gives_up_after(&self) -> Duration {
        Duration::from_secs(self.idle.as_secs() + self.interval.as_secs() * self.count as u64)
    }
}

/// Lifts [`IDLE_IN_TRANSACTION`] for the rest of the transaction `tx`: for one that must wait on
/// something slower between its statements (a client's upload, queries on other connections) and
/// locks only rows of its own making, which nothing else waits on.
pub async fn allow_idle_in(tx: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    sqlx::query(r#"set local idle_in_transaction_session_timeout = 0"#)
        .execute(tx)
        .await
        .map(|_| ())
}

/// How every genq connection is made: `url`, with the session settings above.
fn connect_options(url: &SecretUrl) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = url
        .expose()
        .parse()
        .with_context(|| format!("reading the PostgreSQL URL {url}"))?;
    let seconds = |d: Duration| d.as_secs().to_string();
    Ok(options.options([
        (
            "idle_in_transaction_session_timeout",
            format!("{}s", IDLE_IN_TRANSACTION.as_secs()),
        ),
        ("tcp_keepalives_idle", seconds(SERVER_KEEPALIVE.idle)),
        (
            "tcp_keepalives_interval",
            seconds(SERVER_KEEPALIVE.interval),
        ),
        ("tcp_keepalives_count", SERVER_KEEPALIVE.count.to_string()),
        (
            "tcp_user_timeout",
            SERVER_KEEPALIVE.gives_up_after().as_millis().to_string(),
        ),
    ]))
}

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
        .connect_with(connect_options(url)?)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url}"))
}

/// Whether an error of connecting, migrating or listening is worth retrying at start
/// ([`crate::startup::patiently`]): PostgreSQL unavailable, but not a TLS or protocol error, which
/// a wrong URL or `sslmode` gives and waiting does not mend.
pub fn connect_unavailable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<sqlx::Error>())
        .is_some_and(|e| {
            !matches!(e, sqlx::Error::Tls(_) | sqlx::Error::Protocol(_)) && is_unavailable(e)
        })
}

/// Connects to a database that must already exist, for tools that must not create or change a
/// schema behind the services' back (`genqctl`: only `genqctl migrate` does that). `Ok(None)` when
/// the database does not exist; an error when PostgreSQL cannot be reached. Does not migrate.
pub async fn connect_existing(
    url: &SecretUrl,
    max_connections: u32,
) -> anyhow::Result<Option<PgPool>> {
    // `connect` opens one connection at once, so a missing database shows here, as SQLSTATE
    // 3D000 (invalid_catalog_name), which sqlx does not retry.
    match PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(connect_options(url)?)
        .await
    {
        Ok(pool) => Ok(Some(pool)),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => Ok(None),
        Err(e) => Err(e).with_context(|| format!("connecting to PostgreSQL at {url}")),
    }
}

/// Where a database's schema stands against the migrations this build carries ([`MIGRATOR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations this build knows.
    pub known: usize,
    /// How many of those the database has applied successfully.
    pub applied: usize,
    /// Versions the database has applied that this build does not know: a newer build migrated
    /// it.
    pub unknown: Vec<i64>,
}

impl SchemaStatus {
    /// Whether the database lacks migrations this build needs (`genqctl migrate` applies them).
    pub fn is_behind(&self) -> bool {
        self.applied < self.known
    }
}

/// Reads sqlx's `_sqlx_migrations` table (absent: nothing applied) and compares it with
/// [`MIGRATOR`]. A migration recorded as failed (`success = false`) does not count as applied.
/// Changes nothing.
pub async fn schema_status(pool: &PgPool) -> anyhow::Result<SchemaStatus> {
    let has_table: bool =
        sqlx::query_scalar(r#"select to_regclass('_sqlx_migrations') is not null"#)
            .fetch_one(pool)
            .await
            .context("looking for the migrations table")?;
    let applied: Vec<i64> = if has_table {
        sqlx::query_scalar(r#"select version from _sqlx_migrations where success order by version"#)
            .fetch_all(pool)
            .await
            .context("reading the applied migrations")?
    } else {
        Vec::new()
    };
    let known: BTreeSet<i64> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    Ok(SchemaStatus {
        known: known.len(),
        applied: applied.iter().filter(|v| known.contains(v)).count(),
        unknown: applied.into_iter().filter(|v| !known.contains(v)).collect(),
    })
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

/// Answers when PostgreSQL does: for readiness checks.
pub async fn ping(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(r#"select 1"#).execute(pool).await.map(|_| ())
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
        // connections) and 57 (operator intervention: shutting down, starting up), and 25P03:
        // the session sat idle in a transaction past IDLE_IN_TRANSACTION (its link was down).
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code == "25P03" || ["08", "53", "57"].iter().any(|c| code.starts_with(c))
        }),
        _ => false,
    }
}

/// Whether the statement gave up waiting for a lock (`lock_timeout`, SQLSTATE 55P03).
pub fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.code().is_some_and(|code| code == "55P03"))
}
