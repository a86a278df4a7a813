//! Injecting faults one at a time while the load runs, and timing each recovery in PostgreSQL.
//!
//! Recovery of a fault: from the moment it is injected until every job that was unfinished at
//! that moment has finished (completed, failed or cancelled). For a killed worker the pickup is
//! timed too: until every job the worker held runs again elsewhere or has finished.

use std::time::{Duration, Instant};

use anyhow::Context;
use genq_harness::Cluster;
use genq_shared::db::jobs::report;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// SIGKILL a worker that holds running jobs, then start a new one.
    WorkerKill,
    /// Restart Redis, which comes back empty (it keeps nothing on disk).
    RedisRestart,
    /// FLUSHALL: Redis stays up but forgets every queue, task and worker registration.
    RedisFlushall,
    /// Restart PostgreSQL (fast shutdown: open connections are cut).
    PostgresRestart,
    /// SIGKILL the API, then start it again on the same address.
    ApiRestart,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::WorkerKill => "worker SIGKILL + restart",
            FaultKind::RedisRestart => "Redis restart (empty)",
            FaultKind::RedisFlushall => "Redis FLUSHALL",
            FaultKind::PostgresRestart => "PostgreSQL restart",
            FaultKind::ApiRestart => "API SIGKILL + restart",
        }
    }
}

/// Shell commands that restart the stores; they differ from machine to machine.
pub struct Commands {
    pub redis_restart: String,
    pub redis_flushall: String,
    pub postgres_restart: String,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    /// Jobs unfinished when it was injected.
    pub unfinished: usize,
    /// `None`: not recovered within the patience given.
    pub recovery: Option<Duration>,
    /// Killed workers only: jobs it held, and how long until they all ran again or finished.
    pub held: usize,
    pub pickup: Option<Duration>,
}

pub struct Injector<'a> {
    pub cluster: &'a mut Cluster,
    pub pool: PgPool,
    pub commands: Commands,
    pub patience: Duration,
}

impl Injector<'_> {
    pub async fn inject(&mut self, kind: FaultKind) -> anyhow::Result<Fault> {
        self.until_jobs_run().await;
        let victim = match kind {
            FaultKind::WorkerKill => Some(self.busiest_worker().await?),
            _ => None,
        };
        let unfinished = retry_query(self.patience, || report::unfinished(&self.pool)).await?;
        let held: Vec<Uuid> = match &victim {
            Some((_, name)) => {
                retry_query(self.patience, || report::running_on(&self.pool, name)).await?
            }
            None => Vec::new(),
        };

        let injected = Instant::now();
        match (kind, &victim) {
            (FaultKind::WorkerKill, Some((index, _))) => {
                self.cluster.kill_and_restart_worker(*index).await?
            }
            (FaultKind::ApiRestart, _) => self.cluster.kill_and_restart_api().await?,
            (FaultKind::RedisRestart, _) => shell(&self.commands.redis_restart).await?,
            (FaultKind::RedisFlushall, _) => shell(&self.commands.redis_flushall).await?,
            (FaultKind::PostgresRestart, _) => shell(&self.commands.postgres_restart).await?,
            (FaultKind::WorkerKill, None) => unreachable!("a worker kill always has a victim"),
        }

        let pickup = match &victim {
            Some((_, name)) => self.until_picked_up(&held, name, injected).await,
            None => None,
        };
        let recovery = self.until_finished(&unfinished, injected).await;
        Ok(Fault {
            kind,
            unfinished: unfinished.len(),
            recovery,
            held: held.len(),
            pickup,
        })
    }

    /// Faults are injected while jobs run, so they land mid-job.
    async fn until_jobs_run(&self) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while Instant::now() < give_up {
            let running = report::running_count(&self.pool).await;
            if running.is_ok_and(|n| n > 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The worker (index and registered name) holding the most running jobs; worker 0 if none does.
    async fn busiest_worker(&self) -> anyhow::Result<(usize, String)> {
        let holders = retry_query(self.patience, || report::running_by_worker(&self.pool)).await?;
        for (name, _) in holders {
            for index in 0..self.cluster.workers() {
                // Names are `{prefix}-{pid}-{suffix}`: only the current process of a slot counts.
                let current = format!(
                    "{}-{}-",
                    self.cluster.worker_name(index),
                    self.cluster.worker_pid(index)
                );
                if name.starts_with(&current) {
                    return Ok((index, name));
                }
            }
        }
        let pid = self.cluster.worker_pid(0);
        Ok((0, format!("{}-{pid}-", self.cluster.worker_name(0))))
    }

    async fn until_picked_up(&self, held: &[Uuid], dead: &str, since: Instant) -> Option<Duration> {
        self.until_zero(since, || report::still_held_by(&self.pool, held, dead))
            .await
    }

    async fn until_finished(&self, ids: &[Uuid], since: Instant) -> Option<Duration> {
        self.until_zero(since, || report::unfinished_among(&self.pool, ids))
            .await
    }

    /// Polls `count` until it reads zero; the time since `since` then, or `None` past patience.
    async fn until_zero<F, Fut>(&self, since: Instant, count: F) -> Option<Duration>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = sqlx::Result<i64>>,
    {
        while since.elapsed() < self.patience {
            // Errors while PostgreSQL restarts just mean: not yet.
            if count().await.is_ok_and(|n| n == 0) {
                return Some(since.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Runs a query until PostgreSQL answers it (it may be restarting from the previous fault), for
/// at most `patience`.
async fn retry_query<T, F, Fut>(patience: Duration, query: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = sqlx::Result<T>>,
{
    let give_up = Instant::now() + patience;
    loop {
        match query().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() >= give_up => {
                return Err(e).context("PostgreSQL did not answer the suite's query");
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn shell(command: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .with_context(|| format!("running {command:?}"))?;
    anyhow::ensure!(status.success(), "{command:?} exited with {status}");
    Ok(())
}
