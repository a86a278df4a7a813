//! The reconciler: PostgreSQL is the record, and this brings Redis and stuck jobs back in line
//! with it. The API runs it on a timer; `genqctl queue reconcile` runs one pass on demand. Every
//! step is a conditional update or an idempotent Redis operation, so concurrent passes (several
//! API replicas) are safe.

use std::time::Duration;

use apalis_redis::ConnectionManager;
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    db::recovery::{self, Released},
    queue::{self, Storage},
};

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileConfig {
    /// A running job is taken back after this long without its lease renewed (workers renew the
    /// leases of the jobs they run every 5 s).
    #[arg(long, env = "GENQ_WORKER_STALE_SECS", default_value_t = 15)]
    pub worker_stale_secs: u64,
    /// A queued job that waited this long is checked against Redis and dispatched again if Redis
    /// lost it.
    #[arg(long, env = "GENQ_REDISPATCH_AFTER_SECS", default_value_t = 10)]
    pub redispatch_after_secs: u64,
    /// Finished jobs are deleted this long after they finish; 0 keeps them forever.
    #[arg(long, env = "GENQ_RESULT_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: u64,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Pass {
    /// Running jobs whose lease lapsed, put back in the queue.
    pub requeued: usize,
    /// Running jobs whose lease lapsed that were out of attempts.
    pub failed_lost: usize,
    /// Queued jobs past their deadline.
    pub timed_out: usize,
    /// Queued jobs Redis had lost, dispatched again.
    pub redispatched: usize,
    /// Finished tasks' leftovers removed from Redis.
    pub vacuumed: u64,
    /// Finished jobs removed by retention.
    pub deleted: usize,
}

pub struct Reconciler {
    pub db: PgPool,
    pub storage: Storage,
    pub redis: ConnectionManager,
    pub queue: String,
    pub config: ReconcileConfig,
}

impl Reconciler {
    pub async fn pass(&mut self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        let stale = Duration::from_secs(self.config.worker_stale_secs);
        let mut requeued = Vec::new();
        for (id, attempt) in recovery::abandoned(&self.db, stale).await? {
            let message = "its worker stopped renewing the job's lease (killed or cut off)";
            match recovery::release(&self.db, id, attempt, "worker_lost", message).await? {
                Released::Requeued => requeued.push(id),
                Released::Failed => pass.failed_lost += 1,
                Released::Stale => {}
            }
        }
        pass.requeued = requeued.len();
        if !requeued.is_empty() {
            tracing::warn!(
                jobs = requeued.len(),
                "re-queueing running jobs whose lease lapsed"
            );
            queue::redispatch(&self.db, &mut self.storage, &requeued).await?;
        }

        pass.timed_out = recovery::expire_queued(&self.db).await?.len();

        let waited = Duration::from_secs(self.config.redispatch_after_secs);
        let candidates = recovery::queued_since(&self.db, waited, 5000).await?;
        if !candidates.is_empty() {
            let lost = queue::missing(&mut self.redis, &self.queue, &candidates).await?;
            if !lost.is_empty() {
                tracing::warn!(
                    jobs = lost.len(),
                    "dispatching again queued jobs Redis had lost"
                );
                queue::redispatch(&self.db, &mut self.storage, &lost).await?;
            }
            let checked: Vec<_> = candidates.iter().map(|(job_id, _)| *job_id).collect();
            recovery::touch_queued(&self.db, &checked).await?;
            pass.redispatched = lost.len();
        }

        pass.vacuumed = queue::vacuum(&mut self.redis, &self.queue).await?;
        if self.config.retention_secs > 0 {
            let older = Duration::from_secs(self.config.retention_secs);
            loop {
                let deleted = recovery::delete_finished(&self.db, older, 1000).await?;
                pass.deleted += deleted.len();
                if deleted.len() < 1000 {
                    break;
                }
            }
        }
        Ok(pass)
    }

    /// Runs a pass every `interval` until `shutdown` resolves; a failed pass is logged and retried
    /// at the next tick (PostgreSQL or Redis may be down for a while).
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => match self.pass().await {
                    Ok(pass) => tracing::debug!(?pass, "reconciled"),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "reconcile pass failed; retrying next tick"),
                },
            }
        }
    }
}
