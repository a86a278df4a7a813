//! Waiting on jobs without polling: one PostgreSQL `LISTEN` connection per process (and, in the
//! API, one Redis subscription for job events) wakes exactly the waiters of the job that changed.
//! Long-polls, event streams, `POST /generate` and a running job's cancel watch all wait here.
//!
//! The same PostgreSQL connection hears of every change to the API keys, for the API's key cache.
//!
//! A notification can be missed while a connection is down, so after every (re)connection each
//! waiter is woken to re-read what it waits on, and the keys count as changed; a slow safety
//! re-read covers a connection that died without the listener noticing.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{db, types::JobStatus};

/// How often a waiter re-reads the job even without a notification.
pub const SAFETY_RECHECK: Duration = Duration::from_secs(30);

/// Pause before reconnecting a lost listener.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Counters a waiter compares to see what changed since it last looked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The job's status in PostgreSQL may have changed.
    pub status: u64,
    /// The job's event stream in Redis has new entries.
    pub events: u64,
}

#[derive(Clone)]
pub struct JobWatch {
    pool: PgPool,
    watched: Arc<Watched>,
    /// Counts changes to `api_keys` (and reconnections, which may have missed some).
    key_changes: watch::Receiver<u64>,
}

/// Jobs someone waits on, each with the number of its waiters.
#[derive(Default)]
struct Watched {
    jobs: Mutex<HashMap<Uuid, (watch::Sender<Changes>, usize)>>,
}

impl Watched {
    fn subscribe(watched: &Arc<Watched>, id: Uuid) -> Subscription {
        let mut jobs = watched.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let (sender, waiters) = jobs
            .entry(id)
            .or_insert_with(|| (watch::channel(Changes::default()).0, 0));
        *waiters += 1;
        let changes = sender.subscribe();
        let reported = *changes.borrow();
        Subscription {
            id,
            changes,
            reported,
            watched: Arc::clone(watched),
        }
    }

    fn bump(&self, id: Option<Uuid>, change: impl Fn(&mut Changes)) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let wake = |sender: &watch::Sender<Changes>| sender.send_modify(&change);
        match id {
            Some(id) => {
                if let Some((sender, _)) = jobs.get(&id) {
                    wake(sender);
                }
            }
            None => jobs.values().for_each(|(sender, _)| wake(sender)),
        }
    }
}

impl std::fmt::Debug for JobWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWatch").finish_non_exhaustive()
    }
}

/// One waiter's view of one job; dropping it stops watching.
pub struct Subscription {
    id: Uuid,
    changes: watch::Receiver<Changes>,
    /// The counters as this waiter last reported them: a change made while the waiter was busy
    /// elsewhere (reading the job, answering its client) is reported by the next call.
    reported: Changes,
    watched: Arc<Watched>,
}

impl Subscription {
    /// Waits until something changed since the last call (or since subscribing), and says what.
    /// Never resolves if nothing changes: callers bound it with a timeout. Cancel-safe: dropping
    /// the future loses no change.
    pub async fn changed(&mut self) -> Changes {
        loop {
            let now = *self.changes.borrow_and_update();
            if now != self.reported {
                let changed = Changes {
                    status: now.status - self.reported.status,
                    events: now.events - self.reported.events,
                };
                self.reported = now;
                return changed;
            }
            // The sender lives as long as this subscription holds its count, so this cannot fail.
            let _ = self.changes.changed().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut jobs = self.watched.jobs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, waiters)) = jobs.get_mut(&self.id) {
            *waiters -= 1;
            if *waiters == 0 {
                jobs.remove(&self.id);
            }
        }
    }
}

impl JobWatch {
    /// Starts the process's PostgreSQL listener, and connects it before returning so that a
    /// waiter subscribing afterwards misses nothing.
    pub async fn listen(pool: PgPool) -> sqlx::Result<JobWatch> {
        let listener = connect_listener(&pool).await?;
        let watched = Arc::new(Watched::default());
        let (key_change_count, key_changes) = watch::channel(0);
        tokio::spawn(listen_to_postgres(
            pool.clone(),
            listener,
            Arc::clone(&watched),
            key_change_count,
        ));
        Ok(JobWatch {
            pool,
            watched,
            key_changes,
        })
    }

    /// A count that goes up whenever `api_keys` may have changed: a revocation, or a reconnection
    /// of the listener (a change made meanwhile was not announced).
    pub fn key_changes(&self) -> watch::Receiver<u64> {
        self.key_changes.clone()
    }

    /// Also wakes waiters when a worker announces new entries in a job's event stream (see
    /// [`crate::events`]) on this Redis channel.
    pub async fn with_events(self, redis: redis::Client, channel: String) -> anyhow::Result<Self> {
        let subscription = subscribe(&redis, &channel).await?;
        tokio::spawn(listen_to_redis(
            redis,
            channel,
            subscription,
            Arc::clone(&self.watched),
        ));
        Ok(self)
    }

    /// Starts watching a job. Subscribe before reading what you wait on, so that a change in
    /// between is not lost.
    pub fn subscribe(&self, id: Uuid) -> Subscription {
        Watched::subscribe(&self.watched, id)
    }

    /// Waits until the job is final or `timeout` passes. Returns the status then (not final on
    /// timeout), or `None` for an unknown job.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> sqlx::Result<Option<JobStatus>> {
        let mut subscription = self.subscribe(id);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match db::jobs::status(&self.pool, id).await? {
                Some(s) if !s.is_final() => {}
                other => return Ok(other),
            }
            let recheck_at = deadline.min(tokio::time::Instant::now() + SAFETY_RECHECK);
            loop {
                tokio::select! {
                    changes = subscription.changed() => if changes.status > 0 { break },
                    _ = tokio::time::sleep_until(recheck_at) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return db::jobs::status(&self.pool, id).await;
            }
        }
    }

    /// Jobs with at least one waiter (for tests and diagnostics).
    pub fn watched_jobs(&self) -> usize {
        self.watched
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

async fn connect_listener(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([db::STATUS_CHANNEL, db::KEY_CHANNEL])
        .await?;
    Ok(listener)
}

async fn listen_to_postgres(
    pool: PgPool,
    mut listener: PgListener,
    watched: Arc<Watched>,
    key_change_count: watch::Sender<u64>,
) {
    loop {
        // `try_recv` says when the connection is lost (`Ok(None)`), which `recv` hides.
        match listener.try_recv().await {
            Ok(Some(note)) => {
                match note.channel() {
                    db::KEY_CHANNEL => key_change_count.send_modify(|n| *n += 1),
                    db::STATUS_CHANNEL => {
                        if let Ok(id) = note.payload().parse::<Uuid>() {
                            watched.bump(Some(id), |c| c.status += 1);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            Ok(None) => tracing::warn!("the job status listener lost its connection"),
            Err(e) => tracing::warn!(error = %e, "the job status listener failed"),
        }
        listener = loop {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            match connect_listener(&pool).await {
                Ok(listener) => break listener,
                Err(e) => tracing::warn!(error = %e, "cannot reconnect the job status listener"),
            }
        };
        tracing::info!("the job status listener is back");
        // Whatever changed meanwhile was not announced: every waiter looks again, and every
        // cached key is checked again.
        watched.bump(None, |c| c.status += 1);
        key_change_count.send_modify(|n| *n += 1);
    }
}

async fn subscribe(redis: &redis::Client, channel: &str) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = redis.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

async fn listen_to_redis(
    redis: redis::Client,
    channel: String,
    mut pubsub: redis::aio::PubSub,
    watched: Arc<Watched>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let id = message.get_payload::<String>().ok();
                if let Some(id) = id.and_then(|id| id.parse::<Uuid>().ok()) {
                    watched.bump(Some(id), |c| c.events += 1);
                }
            }
        }
        tracing::warn!("the job event subscription lost its connection");
        pubsub = loop {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            match subscribe(&redis, &channel).await {
                Ok(pubsub) => break pubsub,
                Err(e) => tracing::warn!(error = %e, "cannot resubscribe to job events"),
            }
        };
        tracing::info!("the job event subscription is back");
        watched.bump(None, |c| c.events += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOON: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_change_made_between_two_waits_is_reported_by_the_second() {
        let watched = Arc::new(Watched::default());
        let id = Uuid::now_v7();
        let mut subscription = Watched::subscribe(&watched, id);

        watched.bump(Some(id), |c| c.status += 1);
        let first = tokio::time::timeout(SOON, subscription.changed()).await;
        // While the waiter is busy (not inside `changed`), two changes come in.
        watched.bump(Some(id), |c| c.events += 1);
        watched.bump(Some(id), |c| c.status += 1);
        let second = tokio::time::timeout(SOON, subscription.changed()).await;

        assert_eq!(
            first,
            Ok(Changes {
                status: 1,
                events: 0
            })
        );
        assert_eq!(
            second,
            Ok(Changes {
                status: 1,
                events: 1
            })
        );
    }

    #[tokio::test]
    async fn a_wait_dropped_half_way_loses_no_change() {
        let watched = Arc::new(Watched::default());
        let id = Uuid::now_v7();
        let mut subscription = Watched::subscribe(&watched, id);

        // A select! whose other branch wins drops the `changed` future.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), subscription.changed()).await;
        watched.bump(Some(id), |c| c.status += 1);
        let after = tokio::time::timeout(SOON, subscription.changed()).await;

        assert!(gave_up.is_err());
        assert_eq!(
            after,
            Ok(Changes {
                status: 1,
                events: 0
            })
        );
    }

    #[tokio::test]
    async fn only_the_changed_jobs_waiters_are_woken_and_the_last_one_out_removes_it() {
        let watched = Arc::new(Watched::default());
        let (mine, other) = (Uuid::now_v7(), Uuid::now_v7());
        let mut subscription = Watched::subscribe(&watched, mine);
        let second = Watched::subscribe(&watched, mine);

        watched.bump(Some(other), |c| c.status += 1);
        let woken = tokio::time::timeout(Duration::from_millis(50), subscription.changed()).await;

        assert!(woken.is_err(), "woken by another job's change");
        assert_eq!(watched.jobs.lock().unwrap().len(), 1);
        drop(subscription);
        assert_eq!(watched.jobs.lock().unwrap().len(), 1);
        drop(second);
        assert!(watched.jobs.lock().unwrap().is_empty());
    }
}
