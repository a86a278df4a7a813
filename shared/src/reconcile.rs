//! The reconciler: PostgreSQL is the record, and this brings Redis and stuck jobs back in line
//! with it. The API runs it on a timer; `genqctl queue reconcile` runs one pass on demand. Every
//! step is a conditional update or an idempotent Redis operation, so concurrent passes (several
//! API replicas) are safe.

use std::time::Duration;

use apalis_redis::ConnectionManager;
use serde::Serialize;
use sqlx::PgPool;

use crate::{
    db::jobs::{self, Released},
    queue::{self, Storage},
    types::ErrorCode,
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
    /// Queued jobs Redis had lost (or never got), dispatched again.
    pub redispatched: usize,
    /// Finished tasks' leftovers removed from Redis.
    pub vacuumed: u64,
    /// Finished jobs removed by retention.
    pub deleted: usize,
    /// Steps that failed this pass; the others ran regardless.
    pub failed_steps: Vec<FailedStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedStep {
    pub step: &'static str,
    pub error: String,
}

pub struct Reconciler {
    pub db: PgPool,
    pub storage: Storage,
    pub redis: ConnectionManager,
    pub queue: String,
    pub config: ReconcileConfig,
}

impl Reconciler {
    /// Runs every step, each on its own: a Redis outage must not stop deadlines or retention,
    /// nor a PostgreSQL error the Redis vacuum. Failed steps are logged and listed in the pass.
    pub async fn pass(&mut self) -> Pass {
        let mut pass = Pass::default();
        let outcome = self.take_back_lost_claims(&mut pass).await;
        record(&mut pass, "take_back_lost_claims", outcome);
        let outcome = self.expire_queued(&mut pass).await;
        record(&mut pass, "expire_queued", outcome);
        let outcome = self.redispatch_lost(&mut pass).await;
        record(&mut pass, "redispatch_lost", outcome);
        let outcome = self.vacuum_redis(&mut pass).await;
        record(&mut pass, "vacuum_redis", outcome);
        let outcome = self.apply_retention(&mut pass).await;
        record(&mut pass, "apply_retention", outcome);
        pass
    }

    async fn take_back_lost_claims(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        let stale = Duration::from_secs(self.config.worker_stale_secs);
        let mut requeued = Vec::new();
        for (id, attempt) in jobs::abandoned(&self.db, stale).await? {
            let message = "its worker stopped renewing the job's lease (killed or cut off)";
            match jobs::release(&self.db, id, attempt, ErrorCode::WorkerLost, message).await? {
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
            // Should Redis refuse, they are queued in PostgreSQL and `redispatch_lost` finds them.
            queue::redispatch(&self.db, &mut self.storage, &requeued).await?;
        }
        Ok(())
    }

    async fn expire_queued(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        pass.timed_out = jobs::expire_queued(&self.db).await?.len();
        Ok(())
    }

    async fn redispatch_lost(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        let waited = Duration::from_secs(self.config.redispatch_after_secs);
        let candidates = jobs::queued_since(&self.db, waited, 5000).await?;
        if candidates.is_empty() {
            return Ok(());
        }
        let lost = queue::missing(&mut self.redis, &self.queue, &candidates).await?;
        if !lost.is_empty() {
            tracing::warn!(
                jobs = lost.len(),
                "dispatching queued jobs Redis does not hold"
            );
            pass.redispatched = queue::redispatch(&self.db, &mut self.storage, &lost).await?;
        }
        let checked: Vec<_> = candidates.iter().map(|(job_id, _)| *job_id).collect();
        jobs::touch_queued(&self.db, &checked).await?;
        Ok(())
    }

    async fn vacuum_redis(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        pass.vacuumed = queue::vacuum(&mut self.redis, &self.queue).await?;
        Ok(())
    }

    async fn apply_retention(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        if self.config.retention_secs == 0 {
            return Ok(());
        }
        let older = Duration::from_secs(self.config.retention_secs);
        loop {
            let deleted = jobs::delete_finished(&self.db, older, 1000).await?;
            pass.deleted += deleted.len();
            if deleted.len() < 1000 {
                return Ok(());
            }
        }
    }

    /// Runs a pass every `interval` until `shutdown` resolves; failed steps are logged and tried
    /// again at the next tick (PostgreSQL or Redis may be down for a while).
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {
                    let pass = self.pass().await;
                    tracing::debug!(?pass, "reconciled");
                }
            }
        }
    }
}

fn record(pass: &mut Pass, step: &'static str, outcome: anyhow::Result<()>) {
    if let Err(e) = outcome {
        let error = format!("{e:#}");
        tracing::warn!(step, error, "reconciler step failed; retrying next pass");
        pass.failed_steps.push(FailedStep { step, error });
    }
}
