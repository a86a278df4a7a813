//! Taking job ids from Redis. apalis's worker ends for good on any Redis error (a restart, a
//! FLUSHALL that forgets its registration, a slow answer), and its `Monitor` then waits for the
//! shutdown signal with no consumer left. So the worker is supervised here: rebuilt under a fresh
//! name after a backoff, for as long as the process runs. Jobs run on their own tasks, so a
//! consumer that dies mid-job leaves its jobs running to their end. It is also stopped while
//! PostgreSQL cannot be reached (see [`crate::reachability`]), and rebuilt once it answers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use apalis::prelude::*;
use futures::future::{BoxFuture, Shared};
use genq_shared::queue;
use tokio_util::task::TaskTracker;

use crate::{reachability::CLAIM_PATIENCE, runner::JobRunner};

const FIRST_RETRY: Duration = Duration::from_millis(200);
const LONGEST_RETRY: Duration = Duration::from_secs(5);
/// A consumer that ran this long counts as healthy: its failure restarts the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// Stopped because PostgreSQL is unreachable, apalis's worker waits for its handlers; past this
/// it is dropped (it may never finish a stop by itself: see `CONSUMER_STOP_PATIENCE` in lib.rs).
/// Its jobs go on on their own tasks, and the tasks it held are re-queued by other workers.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

pub struct Consumer {
    pub name: String,
    pub storage: queue::Storage,
    pub poll: Duration,
    pub max_jobs: usize,
    pub runner: Arc<JobRunner>,
    pub jobs: TaskTracker,
    pub refill: Refill,
}

/// Keeps the model queue's ready list holding as many tasks as this worker has free slots (see
/// `genq_shared::queue::lanes`): as each job ends, and on every poll.
#[derive(Clone)]
pub struct Refill {
    pub redis: queue::RedisConnection,
    /// The model's queue namespace.
    pub queue: String,
    pub max_jobs: usize,
    pub jobs: TaskTracker,
}

impl Refill {
    /// Tops the ready list up to `target`; a Redis error only delays work (the next poll tries
    /// again), so it is counted and logged at debug level.
    async fn to(&self, target: usize) {
        let mut redis = self.redis.clone();
        if let Err(e) = queue::lanes::refill(&mut redis, &self.queue, target).await {
            genq_shared::metrics::redis_error();
            tracing::debug!(error = format!("{e:#}"), "could not refill the ready list");
        }
    }

    fn free_slots(&self) -> usize {
        self.max_jobs.saturating_sub(self.jobs.len())
    }

    /// Refills every `poll` until `stop` resolves.
    pub async fn every(self, poll: Duration, stop: impl Future<Output = ()>) {
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = ticks.tick() => {
                    let free = self.free_slots();
                    if free > 0 {
                        self.to(free).await;
                    }
                }
            }
        }
    }
}

impl Consumer {
    /// Consumes until `shutdown` resolves, then lets the jobs in hand finish (fetched but
    /// unstarted ones go back to the queue).
    pub async fn run(self, shutdown: Shared<BoxFuture<'static, ()>>) {
        let postgres = self.runner.postgres.clone();
        let mut retry = FIRST_RETRY;
        for generation in 0u64.. {
            let started = Instant::now();
            let (stop, lost) = (shutdown.clone(), postgres.clone());
            let worker = WorkerBuilder::new(format!("{}-{generation}", self.name))
                .backend(self.storage.clone().poll_with_interval(self.poll))
                .concurrency(self.max_jobs)
                .data(self.runner.clone())
                .data(self.jobs.clone())
                .data(self.refill.clone())
                .build(handle);
            let running = worker.run_until(async move {
                tokio::select! {
                    _ = stop => {}
                    _ = lost.lost() => {}
                }
                Ok::<_, std::io::Error>(())
            });
            let given_up = async {
                postgres.lost().await;
                tokio::time::sleep(STOP_PATIENCE).await;
            };
            let ended = tokio::select! {
                ended = running => ended,
                _ = given_up => Ok(()),
            };
            if shutdown.peek().is_some() {
                return;
            }
            if postgres.is_unreachable() {
                tokio::select! {
                    _ = postgres.until_reachable(&self.runner.db) => {}
                    _ = shutdown.clone() => return,
                }
                retry = FIRST_RETRY;
                continue;
            }
            if started.elapsed() >= HEALTHY_RUN {
                retry = FIRST_RETRY;
            }
            genq_shared::metrics::redis_error();
            tracing::warn!(
                error = ended.err().map(|e| e.to_string()),
                retry_in = ?retry,
                "the job consumer stopped (Redis unreachable?); restarting it"
            );
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = shutdown.clone() => return,
            }
            retry = (retry * 2).min(LONGEST_RETRY);
        }
    }
}

/// apalis handler: job outcomes are recorded in PostgreSQL, so the Redis task is done either way;
/// an error here means PostgreSQL could not be reached and apalis should deliver the task again.
async fn handle(
    dispatch: queue::Dispatch,
    runner: Data<Arc<JobRunner>>,
    jobs: Data<TaskTracker>,
    refill: Data<Refill>,
) -> Result<(), BoxDynError> {
    let runner: Arc<JobRunner> = (*runner).clone();
    let postgres = runner.postgres.clone();
    let job_id = dispatch.job_id;
    let (claimed, claim_settled) = tokio::sync::oneshot::channel();
    // On its own task: dropping this handler (its consumer died) must not stop the job.
    let job = jobs.spawn(async move { runner.run(job_id, claimed).await });
    if tokio::time::timeout(CLAIM_PATIENCE, claim_settled)
        .await
        .is_err()
    {
        // The claim goes on (it is a transaction: dropped mid-way, it could leave its pooled
        // connection inside it, launchbadge/sqlx#4393) and may still take the job once the link
        // heals; meanwhile another worker may, and only one claim wins.
        postgres.mark_unreachable("a claim did not settle in time");
        return Err(format!(
            "job {job_id}: the claim did not settle within {CLAIM_PATIENCE:?}; handed back"
        )
        .into());
    }
    let ended = job.await;
    // Before the slot frees (this handler returns), so the fetch that fills it finds a task.
    refill.to(refill.free_slots() + 1).await;
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let locked = e
                .downcast_ref::<sqlx::Error>()
                .is_some_and(genq_shared::db::is_lock_timeout);
            match locked {
                // Held by another session (see `CLAIM_LOCK_WAIT`): apalis delivers it again.
                true => tracing::warn!(task_id = %job_id, "job's row locked elsewhere; retried"),
                false => {
                    tracing::error!(error = ?e, task_id = %job_id, "job could not be processed")
                }
            }
            Err(e.into())
        }
        Err(panicked) => {
            tracing::error!(error = %panicked, task_id = %job_id, "job task panicked");
            Err(panicked.into())
        }
    }
}
