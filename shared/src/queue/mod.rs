//! Redis dispatch through apalis. Redis only carries job ids to workers; every job's state lives in
//! PostgreSQL, so anything Redis loses can be dispatched again from there.
//!
//! Each delivery of a job is one apalis task whose id PostgreSQL records (`jobs.dispatch_id`), so
//! the reconciler and operators' tools can find and remove a job's task without apalis's (broken
//! in 1.0) listing APIs. [`due`] keeps apalis's fetch working under a deep backlog.

use std::time::Duration;

use anyhow::Context;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{config::QueueConfig, db};

mod due;
pub use due::{PROMOTE_PAGE, promote_all_due, promote_due};

/// What travels through Redis: only the job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispatch {
    pub job_id: Uuid,
}

pub type Storage = RedisStorage<Dispatch>;
pub type RedisConnection = ConnectionManager;

/// apalis's settings for genq's queue. The queue name is always explicit: apalis's default is the
/// Rust type name, which differs between binaries built from different module paths.
pub fn storage_config(queue: &str) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(queue)
        // Tasks a dead worker had fetched but not started are re-queued by the other workers'
        // heartbeats once its own stop for this long: 10 s instead of apalis's default five
        // minutes. Inference runs off the runtime, so a live worker's heartbeats keep flowing.
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(5)
        // A worker fetches only when one of its slots is free, but claims a whole batch (10 by
        // default) of which one starts: the others would wait on a busy worker while another
        // idles. One at a time, a worker holds only what it runs; freed slots still refill at
        // once, one Redis round trip each.
        .batch_size(1)
        // apalis's task "lock" (a lease in Redis, renewed by heartbeats) removes the task from
        // the ready list with LREM, though its fetch has already taken it off the head: a scan of
        // the whole backlog per job, which halved one worker's drain rate behind a million jobs.
        // genq keeps its own leases in PostgreSQL; a dead worker's tasks are still re-queued
        // from its in-flight set.
        .lock_tasks(false)
}

/// Redis's sign that it still holds every dispatch: `intact` once the reconciler has checked
/// every queued job against it. Gone when Redis lost its data (a restart without persistence, a
/// flush), which makes the next pass check every queued job again.
pub fn intact_marker(queue: &str) -> String {
    format!("{queue}:genq:intact")
}

const INTACT: &str = "intact";

/// Whether Redis holds the marker's `intact` value; see [`intact_marker`].
pub async fn is_intact(conn: &mut ConnectionManager, queue: &str) -> anyhow::Result<bool> {
    let value: Option<String> = redis::cmd("GET")
        .arg(intact_marker(queue))
        .query_async(conn)
        .await
        .context("reading the intact marker from Redis")?;
    Ok(value.as_deref() == Some(INTACT))
}

/// Starts a check of every queued job: the marker takes a value of this check's own, returned.
pub async fn begin_full_check(conn: &mut ConnectionManager, queue: &str) -> anyhow::Result<String> {
    let check = format!("checking {}", Uuid::new_v4());
    redis::cmd("SET")
        .arg(intact_marker(queue))
        .arg(&check)
        .query_async::<()>(conn)
        .await
        .context("setting the intact marker in Redis")?;
    Ok(check)
}

/// Ends a full check begun with [`begin_full_check`]: the marker becomes `intact` only if it
/// still holds that check's value, so data Redis lost during the check is not taken as checked.
/// Says whether it did.
pub async fn finish_full_check(
    conn: &mut ConnectionManager,
    queue: &str,
    check: &str,
) -> anyhow::Result<bool> {
    let script = redis::Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
              redis.call('SET', KEYS[1], ARGV[2])
              return 1
          end
          return 0",
    );
    let done: i32 = script
        .key(intact_marker(queue))
        .arg(check)
        .arg(INTACT)
        .invoke_async(conn)
        .await
        .context("setting the intact marker in Redis")?;
    Ok(done == 1)
}

/// Connects to Redis lazily: the connection is made (and remade) on first use, so a caller whose
/// other work does not need Redis (`genqctl queue reconcile`) can run while it is down.
pub fn connect_lazy(config: &QueueConfig) -> anyhow::Result<(Storage, ConnectionManager)> {
    let client = redis::Client::open(config.redis_url.expose())
        .with_context(|| format!("invalid Redis URL {}", config.redis_url))?;
    let conn = ConnectionManager::new_lazy_with_config(client, Default::default())
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let storage = RedisStorage::new(conn.clone()).with_config(storage_config(&config.queue));
    Ok((storage, conn))
}

pub async fn connect(config: &QueueConfig) -> anyhow::Result<(Storage, ConnectionManager)> {
    let conn = apalis_redis::connect(config.redis_url.expose())
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let storage = RedisStorage::new(conn.clone()).with_config(storage_config(&config.queue));
    Ok((storage, conn))
}

/// The apalis task id of a dispatch (see `db::jobs::renew_dispatches`).
pub fn task_id(dispatch_id: Uuid) -> TaskId {
    TaskId::from_ulid(ulid::Ulid(dispatch_id.as_u128()))
}

/// The dispatch an apalis task id stands for; `None` for a task genq did not push.
pub fn dispatch_of(task_id: &str) -> Option<Uuid> {
    ulid::Ulid::from_string(task_id)
        .ok()
        .map(|ulid| Uuid::from_u128(ulid.0))
}

/// Pushes one delivery of a job. `dispatch_id` must be the one PostgreSQL records for the job.
pub async fn dispatch(
    storage: &mut Storage,
    job_id: Uuid,
    dispatch_id: Uuid,
) -> anyhow::Result<()> {
    push_after(storage, job_id, dispatch_id, Duration::ZERO).await?;
    make_ready(storage, 1).await;
    Ok(())
}

/// Pushes the first delivery of many recorded jobs (each under its own id, as
/// `db::jobs::insert_many` records them), a thousand per Redis round trip.
pub async fn dispatch_many(storage: &mut Storage, job_ids: &[Uuid]) -> anyhow::Result<()> {
    for chunk in job_ids.chunks(1000) {
        // Collected first: a lazy iterator over the borrowed chunk makes the future not Send.
        let tasks: Vec<_> = chunk
            .iter()
            .map(|&job_id| {
                TaskBuilder::new(Dispatch { job_id })
                    .task_id(task_id(job_id))
                    .build()
            })
            .collect();
        storage
            .push_all(&mut futures::stream::iter(tasks))
            .await
            .with_context(|| format!("pushing {} jobs to Redis", chunk.len()))?;
        make_ready(storage, chunk.len()).await;
    }
    Ok(())
}

/// After pushing `pushed` due tasks, moves as many to the ready list (see [`due`]). Best effort:
/// the tasks are dispatched either way, and the reconciler's next pass moves what this did not.
async fn make_ready(storage: &mut Storage, pushed: usize) {
    let config = storage.get_config().clone();
    if let Err(e) = promote_due(storage.get_connection(), &config, pushed).await {
        tracing::warn!(
            error = format!("{e:#}"),
            "due tasks left for the reconciler to move"
        );
    }
}

/// Pushes a delivery due after `delay`; a due one waits in apalis's scheduled set until
/// [`make_ready`] moves it.
async fn push_after(
    storage: &mut Storage,
    job_id: Uuid,
    dispatch_id: Uuid,
    delay: Duration,
) -> anyhow::Result<()> {
    let task = TaskBuilder::new(Dispatch { job_id })
        .task_id(task_id(dispatch_id))
        .run_after(delay)
        .build();
    storage
        .push_task(task)
        .await
        .with_context(|| format!("pushing job {job_id} to Redis"))
}

/// Puts queued jobs back on the queue under fresh dispatch ids, recorded in PostgreSQL first.
/// Whatever Redis still holds of an earlier delivery is left alone: a worker that gets it finds
/// the job claimed already, or claims it once. A job that was claimed before waits
/// [`retry_delay`], so a job that crashes its workers does not take them down back to back.
/// Returns how many were pushed.
pub async fn redispatch(
    pool: &PgPool,
    storage: &mut Storage,
    job_ids: &[Uuid],
) -> anyhow::Result<usize> {
    let fresh = db::jobs::renew_dispatches(pool, job_ids)
        .await
        .context("recording new dispatches")?;
    let mut due_now = 0;
    for (job_id, dispatch_id, claims) in &fresh {
        let delay = retry_delay(*claims);
        push_after(storage, *job_id, *dispatch_id, delay).await?;
        due_now += usize::from(delay.is_zero());
        // A page at a time: each push leaves its task in apalis's scheduled set until moved.
        if due_now == PROMOTE_PAGE {
            make_ready(storage, due_now).await;
            due_now = 0;
        }
    }
    if due_now > 0 {
        make_ready(storage, due_now).await;
    }
    Ok(fresh.len())
}

/// Backoff before the next attempt of a job claimed `claims` times: none before the first, then
/// 2 s doubling to at most a minute.
pub fn retry_delay(claims: i32) -> Duration {
    match claims {
        ..=0 => Duration::ZERO,
        n => Duration::from_secs(2u64.saturating_pow(n.min(6) as u32)).min(Duration::from_secs(60)),
    }
}

/// Takes jobs' tasks out of Redis where they still wait (ready list, scheduled set) and drops
/// their payloads. A task already fetched by a worker keeps its payload (the worker, or apalis
/// re-queueing a dead worker's tasks, still needs it); the worker finds the job final and skips it.
/// Returns how many tasks were still waiting.
pub async fn remove(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    queue: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<u64> {
    let config = storage_config(queue);
    let dispatches = db::jobs::dispatch_ids(pool, job_ids)
        .await
        .context("reading the jobs' dispatch ids")?;
    let mut removed = 0;
    for chunk in dispatches.chunks(500) {
        let tasks: Vec<String> = chunk.iter().map(|d| task_id(*d).to_string()).collect();
        let mut pipe = redis::pipe();
        for task in &tasks {
            pipe.lrem(config.active_jobs_list(), 0, task)
                .zrem(config.scheduled_jobs_set(), task);
        }
        let replies: Vec<u64> = pipe
            .query_async(conn)
            .await
            .context("removing tasks from Redis")?;
        // Only a task taken out of the list or set is nowhere else: its payload can go.
        let waiting: Vec<&String> = tasks
            .iter()
            .zip(replies.chunks(2))
            .filter(|(_, r)| r[0] + r[1] > 0)
            .map(|(task, _)| task)
            .collect();
        if !waiting.is_empty() {
            let mut pipe = redis::pipe();
            for task in &waiting {
                pipe.hdel(config.job_data_hash(), *task)
                    .del(format!("{}:{task}", config.job_meta_hash()))
                    .ignore();
            }
            pipe.query_async::<()>(conn)
                .await
                .context("dropping removed tasks' payloads")?;
        }
        removed += waiting.len() as u64;
    }
    Ok(removed)
}

/// Which of these queued jobs (job id, dispatch id) Redis no longer has a live task for: no
/// payload (Redis lost it) or a task apalis has finished with.
pub async fn missing(
    conn: &mut ConnectionManager,
    queue: &str,
    queued: &[(Uuid, Uuid)],
) -> anyhow::Result<Vec<Uuid>> {
    if queued.is_empty() {
        // Redis refuses an empty pipeline.
        return Ok(Vec::new());
    }
    let config = storage_config(queue);
    let mut pipe = redis::pipe();
    for (_, dispatch_id) in queued {
        let task = task_id(*dispatch_id).to_string();
        pipe.hexists(config.job_data_hash(), &task)
            .sismember(config.done_jobs_set(), &task)
            .sismember(config.dead_jobs_set(), &task);
    }
    let replies: Vec<bool> = pipe
        .query_async(conn)
        .await
        .context("reading task states from Redis")?;
    Ok(queued
        .iter()
        .zip(replies.chunks(3))
        .filter(|(_, r)| !r[0] || r[1] || r[2])
        .map(|((job_id, _), _)| *job_id)
        .collect())
}

/// Up to `limit` tasks apalis has finished with (its done and dead sets), which it would keep
/// forever; see [`forget_finished`].
pub async fn finished_tasks(
    conn: &mut ConnectionManager,
    queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<String>> {
    let config = storage_config(queue);
    let mut tasks: Vec<String> = Vec::new();
    for set in [config.done_jobs_set(), config.dead_jobs_set()] {
        let room = limit - tasks.len();
        if room == 0 {
            break;
        }
        let some: Vec<String> = redis::cmd("SRANDMEMBER")
            .arg(&set)
            .arg(room)
            .query_async(conn)
            .await
            .context("reading finished tasks from Redis")?;
        tasks.extend(some);
    }
    Ok(tasks)
}

/// Drops finished tasks with their payloads and metadata. Safe because a task id is never pushed
/// twice: a re-dispatch takes a fresh one.
pub async fn forget_finished(
    conn: &mut ConnectionManager,
    queue: &str,
    tasks: &[String],
) -> anyhow::Result<()> {
    let config = storage_config(queue);
    let mut pipe = redis::pipe();
    for task in tasks {
        pipe.srem(config.done_jobs_set(), task)
            .srem(config.dead_jobs_set(), task)
            .hdel(config.job_data_hash(), task)
            .del(format!("{}:{task}", config.job_meta_hash()))
            .ignore();
    }
    pipe.query_async::<()>(conn)
        .await
        .context("vacuuming Redis")
}

/// Tasks waiting in Redis (ready or scheduled), for operators' figures.
pub async fn waiting(conn: &mut ConnectionManager, queue: &str) -> anyhow::Result<u64> {
    let config = storage_config(queue);
    let (ready, scheduled): (u64, u64) = redis::pipe()
        .llen(config.active_jobs_list())
        .zcard(config.scheduled_jobs_set())
        .query_async(conn)
        .await
        .context("reading queue lengths from Redis")?;
    Ok(ready + scheduled)
}

/// Deletes every key of a queue's namespace (tasks, payloads, worker registrations): for throwaway
/// queues such as the tests', the benchmark's and the fault suite's, never a live one. SCAN rather
/// than KEYS, so a shared Redis is not blocked. Returns how many keys went.
pub async fn delete_namespace(
    conn: &mut impl redis::aio::ConnectionLike,
    queue: &str,
) -> redis::RedisResult<u64> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{queue}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for chunk in keys.chunks(500) {
        redis::cmd("DEL").arg(chunk).query_async::<()>(conn).await?;
    }
    Ok(keys.len() as u64)
}

pub async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_the_second_attempt_up_to_a_minute() {
        let secs = |claims| retry_delay(claims).as_secs();
        assert_eq!([0, 1, 2, 3, 5, 6, 50].map(secs), [0, 2, 4, 8, 32, 60, 60]);
    }
}
