//! The reconciler: PostgreSQL is the record, and this brings Redis and stuck jobs back in line
//! with it. Every API replica runs it on a timer; `genqctl queue reconcile` runs one pass on
//! demand. One pass runs at a time per queue (a PostgreSQL advisory lock), so two replicas never
//! both find a job missing from Redis and dispatch it twice.
//!
//! Its periodic cost follows the work done, not the backlog: it checks against Redis only the
//! jobs (re)dispatched since its last pass, every query is an index range scan, and it rereads
//! the whole backlog only when Redis has lost its data (see [`queue::intact_marker`]).

use std::time::Duration;

use apalis_redis::ConnectionManager;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::jobs::{self, Released},
    metrics::names,
    queue,
    types::{ErrorCode, JobStatus},
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
    /// Queued jobs checked against Redis this pass (those dispatched since the last one, or
    /// every queued job after Redis lost its data).
    pub checked: usize,
    /// Whether Redis had lost its data (or this is the queue's first pass), so every queued job
    /// was checked.
    pub full_check: bool,
    /// Queued jobs Redis had lost (or never got, or finished without running), dispatched again.
    pub redispatched: usize,
    /// Queued jobs moved to their fallback model: theirs had no live worker for too long.
    pub fell_back: usize,
    /// Finished tasks' leftovers removed from Redis.
    pub vacuumed: u64,
    /// Finished jobs removed by retention.
    pub deleted: usize,
    /// Due tasks moved from apalis's scheduled set to its ready list: delayed re-dispatches,
    /// tasks apalis rescheduled, pushes whose own move failed (see `queue::promote_due`). Done
    /// even by a pass that found the lock taken.
    pub promoted: usize,
    /// Steps that failed this pass; the others ran regardless.
    pub failed_steps: Vec<FailedStep>,
    /// Another pass (another API replica's, say) held the queue's reconciler lock: this one did
    /// nothing.
    pub skipped: bool,
}

/// Queued jobs checked against Redis per round trip.
const CHECK_PAGE: i64 = 5000;
/// Finished tasks vacuumed per round trip.
const VACUUM_PAGE: usize = 500;
/// Queued jobs expired per statement: short transactions however many fall due at once.
const EXPIRE_PAGE: i64 = 1000;
/// Finished jobs deleted by retention per statement, for the same reason.
const RETENTION_PAGE: i64 = 1000;
/// The window of dispatches to check starts this much before where the last pass stopped. The
/// grace (GENQ_REDISPATCH_AFTER_SECS) already covers a dispatch whose transaction commits up to
/// that late; this is a margin, kept small because every pass checks it again.
const CHECK_OVERLAP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct FailedStep {
    pub step: &'static str,
    pub error: String,
}

impl Pass {
    /// Adds the pass to the process's metrics.
    fn count(&self) {
        let actions = [
            ("requeued", self.requeued as u64),
            ("failed_lost", self.failed_lost as u64),
            ("timed_out", self.timed_out as u64),
            ("redispatched", self.redispatched as u64),
            ("fell_back", self.fell_back as u64),
            ("promoted", self.promoted as u64),
            ("vacuumed", self.vacuumed),
            ("deleted", self.deleted as u64),
        ];
        for (action, jobs) in actions {
            // Zero too, so every series exists from the first pass on.
            metrics::counter!(names::RECONCILER_ACTIONS, "action" => action).increment(jobs);
        }
        crate::metrics::jobs_finished(
            JobStatus::Failed,
            Some(ErrorCode::WorkerLost),
            self.failed_lost as u64,
        );
        crate::metrics::jobs_finished(
            JobStatus::Failed,
            Some(ErrorCode::Timeout),
            self.timed_out as u64,
        );
        for failed in &self.failed_steps {
            metrics::counter!(names::RECONCILER_ERRORS, "step" => failed.step).increment(1);
        }
    }
}

pub struct Reconciler {
    db: PgPool,
    redis: ConnectionManager,
    /// The deployment's queue namespace; each model's queue is under it.
    queue: String,
    pub config: ReconcileConfig,
    /// The registered models as last read: moving due tasks goes on while PostgreSQL is down.
    models: Vec<String>,
}

impl Reconciler {
    pub fn new(
        db: PgPool,
        redis: ConnectionManager,
        queue: String,
        config: ReconcileConfig,
    ) -> Reconciler {
        Reconciler {
            db,
            redis,
            queue,
            config,
            models: Vec::new(),
        }
    }

    /// Runs every step, each on its own: a Redis outage must not stop deadlines or retention,
    /// nor a PostgreSQL error the Redis vacuum. Failed steps are logged and listed in the pass.
    pub async fn pass(&mut self) -> Pass {
        let pass = self.run_steps().await;
        pass.count();
        pass
    }

    async fn run_steps(&mut self) -> Pass {
        let mut pass = Pass::default();
        // Outside the lock: a move is atomic and safe beside another, and must go on while
        // PostgreSQL is down (apalis reschedules tasks whose handler failed meanwhile).
        let outcome = self.promote_due(&mut pass).await;
        record(&mut pass, "promote_due", outcome);
        // Held until the pass ends, or its session does (see `jobs::ReconcilerLock`).
        let lock = match jobs::try_reconciler_lock(&self.db, &self.queue).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                pass.skipped = true;
                return pass;
            }
            Err(e) => {
                record(&mut pass, "lock", Err(e.into()));
                return pass;
            }
        };
        self.steps(&mut pass, &lock).await;
        lock.release().await;
        pass
    }

    /// The steps in order, while the lock holds: once it is lost, another pass may be running.
    async fn steps(&mut self, pass: &mut Pass, lock: &jobs::ReconcilerLock) {
        for step in Step::IN_ORDER {
            if !lock.is_held() {
                let lost = anyhow::anyhow!("the lock's session ended mid-pass; the pass stopped");
                record(pass, "lock", Err(lost));
                return;
            }
            let outcome = match step {
                Step::TakeBackLostClaims => self.take_back_lost_claims(pass).await,
                Step::ExpireQueued => self.expire_queued(pass).await,
                Step::FallBackUnserved => self.fall_back_unserved(pass).await,
                Step::RedispatchLost => self.redispatch_lost(pass).await,
                Step::VacuumRedis => self.vacuum_redis(pass).await,
                Step::ApplyRetention => self.apply_retention(pass).await,
            };
            record(pass, step.name(), outcome);
        }
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
            queue::redispatch(&self.db, &mut self.redis, &self.queue, &requeued).await?;
        }
        Ok(())
    }

    async fn expire_queued(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        loop {
            let expired = jobs::expire_queued(&self.db, EXPIRE_PAGE).await?.len();
            pass.timed_out += expired;
            if expired < EXPIRE_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Checks the jobs (re)dispatched since the last pass against Redis, page by page, and
    /// dispatches again those it lacks. The window only moves once every page was checked, so a
    /// Redis outage leaves them to the next pass.
    async fn redispatch_lost(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        loop {
            let refused = jobs::undispatched(&self.db, CHECK_PAGE).await?;
            pass.checked += refused.len();
            // A push may have reached Redis although its answer did not.
            let lost = self.missing(refused.iter().cloned()).await?;
            self.dispatch_again(pass, &lost).await?;
            let held: Vec<Uuid> = refused
                .iter()
                .map(|&(job, _, _)| job)
                .filter(|job| !lost.contains(job))
                .collect();
            jobs::clear_undispatched(&self.db, &held).await?;
            if (refused.len() as i64) < CHECK_PAGE {
                break;
            }
        }
        pass.full_check = !queue::is_intact(&mut self.redis, &self.queue).await?;
        let full_check = match pass.full_check {
            true => Some(queue::begin_full_check(&mut self.redis, &self.queue).await?),
            false => None,
        };
        let grace = Duration::from_secs(self.config.redispatch_after_secs);
        let window = match full_check {
            Some(_) => jobs::whole_window(&self.db, grace).await?,
            None => {
                jobs::window_since_last_pass(&self.db, &self.queue, grace, CHECK_OVERLAP).await?
            }
        };
        let mut after = None;
        loop {
            let page = jobs::queued_in_window(&self.db, &window, after, CHECK_PAGE).await?;
            let Some(&(last_id, _, last_at, _)) = page.last() else {
                break;
            };
            after = Some((last_at, last_id));
            pass.checked += page.len();
            let dispatches = page
                .iter()
                .map(|(job, dispatch, _, model)| (*job, *dispatch, model.clone()));
            let lost = self.missing(dispatches).await?;
            self.dispatch_again(pass, &lost).await?;
            if (page.len() as i64) < CHECK_PAGE {
                break;
            }
        }
        jobs::set_checked_until(&self.db, &self.queue, window.until).await?;
        if full_check.is_some() && jobs::unrouted_queued(&self.db).await? {
            // Left unfinished, so the next pass checks every queued job again.
            tracing::warn!("queued jobs wait for a default model to be registered");
            return Ok(());
        }
        if let Some(check) = full_check
            && !queue::finish_full_check(&mut self.redis, &self.queue, &check).await?
        {
            tracing::warn!("Redis lost its data during a full check; checking every job again");
        }
        Ok(())
    }

    /// Which of these queued jobs (job, dispatch, model) their model's queue lacks. A job
    /// recorded before models existed (no model) is taken as lost: dispatching it again routes
    /// it to the default model.
    async fn missing(
        &mut self,
        queued: impl Iterator<Item = (Uuid, Uuid, Option<String>)>,
    ) -> anyhow::Result<Vec<Uuid>> {
        let mut by_model: std::collections::HashMap<Option<String>, Vec<(Uuid, Uuid)>> =
            Default::default();
        for (job, dispatch, model) in queued {
            by_model.entry(model).or_default().push((job, dispatch));
        }
        let mut lost = Vec::new();
        for (model, queued) in by_model {
            match model {
                Some(model) => {
                    let ns = queue::model_queue(&self.queue, &model);
                    lost.extend(queue::missing(&mut self.redis, &ns, &queued).await?);
                }
                None => lost.extend(queued.iter().map(|&(job, _)| job)),
            }
        }
        Ok(lost)
    }

    async fn dispatch_again(&mut self, pass: &mut Pass, lost: &[Uuid]) -> anyhow::Result<()> {
        if lost.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            jobs = lost.len(),
            "dispatching queued jobs Redis does not hold"
        );
        pass.redispatched +=
            queue::redispatch(&self.db, &mut self.redis, &self.queue, lost).await?;
        Ok(())
    }

    /// Drops what apalis keeps of finished tasks; a finished task whose job is still queued was
    /// never run (its worker kept failing, say), so the job is dispatched again.
    /// Each page is forgotten only once its jobs were looked at, so a failure leaves it to the
    /// next pass.
    async fn vacuum_redis(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        for model in jobs_models(&self.db).await? {
            let ns = queue::model_queue(&self.queue, &model);
            self.vacuum_queue(pass, &ns).await?;
        }
        Ok(())
    }

    async fn vacuum_queue(&mut self, pass: &mut Pass, ns: &str) -> anyhow::Result<()> {
        loop {
            let tasks = queue::finished_tasks(&mut self.redis, ns, VACUUM_PAGE).await?;
            if tasks.is_empty() {
                return Ok(());
            }
            let dispatches: Vec<Uuid> =
                tasks.iter().filter_map(|t| queue::dispatch_of(t)).collect();
            let unrun = jobs::queued_with_dispatch(&self.db, &dispatches).await?;
            self.dispatch_again(pass, &unrun).await?;
            queue::forget_finished(&mut self.redis, ns, &tasks).await?;
            pass.vacuumed += tasks.len() as u64;
        }
    }

    async fn promote_due(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        match jobs_models(&self.db).await {
            Ok(models) => self.models = models,
            Err(e) => tracing::debug!(error = %e, "moving due tasks of the models last read"),
        }
        for model in &self.models {
            let config = queue::storage_config(&queue::model_queue(&self.queue, model));
            pass.promoted += queue::promote_all_due(&mut self.redis, &config).await?;
        }
        Ok(())
    }

    /// Queued jobs that waited past their fallback's patience for a model without a live worker
    /// go to their fallback model.
    async fn fall_back_unserved(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        loop {
            let moved = jobs::fall_back_unserved(&self.db, EXPIRE_PAGE).await?;
            for (_, fallback) in &moved {
                crate::metrics::fell_back(fallback, "unserved");
            }
            let ids: Vec<Uuid> = moved.iter().map(|(id, _)| *id).collect();
            pass.fell_back += ids.len();
            if !ids.is_empty() {
                tracing::warn!(
                    jobs = ids.len(),
                    "moving jobs no worker served to their fallback"
                );
                queue::redispatch(&self.db, &mut self.redis, &self.queue, &ids).await?;
            }
            if moved.len() < EXPIRE_PAGE as usize {
                return Ok(());
            }
        }
    }

    async fn apply_retention(&mut self, pass: &mut Pass) -> anyhow::Result<()> {
        if self.config.retention_secs == 0 {
            return Ok(());
        }
        let older = Duration::from_secs(self.config.retention_secs);
        loop {
            let deleted = jobs::delete_finished(&self.db, older, RETENTION_PAGE).await?;
            pass.deleted += deleted.len();
            if deleted.len() < RETENTION_PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Runs a pass at once, then one [`next_pause`] after each, until `shutdown` resolves;
    /// failed steps are logged and tried again next pass (PostgreSQL or Redis may be down for a
    /// while).
    pub async fn run(mut self, interval: Duration, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut pause = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(pause) => {
                    let pass = self.pass().await;
                    tracing::debug!(?pass, "reconciled");
                }
            }
            pause = next_pause(interval);
        }
    }
}

/// `interval`, give or take half, at random, after each pass. Replicas on fixed ticks (started
/// together, as a rollout or a fault does) kept their order for good, and the one whose try for
/// the lock came first ran every pass, even while it could not reach Redis: the others never
/// dispatched what it could not (the full fault run met that, a job held 113 s). A pause after
/// the pass lets a slow pass fall behind; the random draw also parts replicas whose passes take
/// as long.
fn next_pause(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.5..1.5))
}

/// The models whose queues the reconciler looks after: every registered one.
async fn jobs_models(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    crate::db::models::names(pool).await
}

/// The steps a pass runs under the lock, each on its own (one failing does not stop the next).
#[derive(Clone, Copy)]
enum Step {
    TakeBackLostClaims,
    ExpireQueued,
    FallBackUnserved,
    RedispatchLost,
    VacuumRedis,
    ApplyRetention,
}

impl Step {
    const IN_ORDER: [Step; 6] = [
        Step::TakeBackLostClaims,
        Step::ExpireQueued,
        Step::FallBackUnserved,
        Step::RedispatchLost,
        Step::VacuumRedis,
        Step::ApplyRetention,
    ];

    /// As logged and listed among a pass's failed steps.
    fn name(self) -> &'static str {
        match self {
            Step::TakeBackLostClaims => "take_back_lost_claims",
            Step::ExpireQueued => "expire_queued",
            Step::FallBackUnserved => "fall_back_unserved",
            Step::RedispatchLost => "redispatch_lost",
            Step::VacuumRedis => "vacuum_redis",
            Step::ApplyRetention => "apply_retention",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_are_spread_around_their_interval() {
        let interval = Duration::from_secs(5);
        let pauses: Vec<Duration> = (0..1000).map(|_| next_pause(interval)).collect();
        let (shortest, longest) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(
            *shortest >= interval / 2 && *longest < interval * 3 / 2,
            "{shortest:?}..{longest:?}"
        );
        // Two replicas in step draw different pauses, so their order changes.
        assert!(
            *longest - *shortest > interval / 2,
            "{shortest:?}..{longest:?}"
        );
    }
}
