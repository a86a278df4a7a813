//! Redis dispatch through apalis. Redis only carries job ids to workers; every job's state lives in
//! PostgreSQL, so anything Redis loses can be dispatched again from there.
//!
//! Each job is one apalis task whose id is derived from the job id, so operators' tools can find
//! and remove a job's task without apalis's (broken in 1.0) listing APIs.

use std::time::Duration;

use anyhow::Context;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::QueueConfig;

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
        // apalis's default of 30 s x 10 missed beats leaves a crashed worker's jobs stuck for
        // five minutes; inference runs off the runtime, so heartbeats keep flowing.
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(4)
}

pub async fn connect(config: &QueueConfig) -> anyhow::Result<(Storage, ConnectionManager)> {
    let conn = apalis_redis::connect(config.redis_url.expose())
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))?;
    let storage = RedisStorage::new(conn.clone()).with_config(storage_config(&config.queue));
    Ok((storage, conn))
}

pub fn task_id(job_id: Uuid) -> TaskId {
    TaskId::from_ulid(ulid::Ulid(job_id.as_u128()))
}

pub async fn dispatch(storage: &mut Storage, job_id: Uuid) -> anyhow::Result<()> {
    let task = TaskBuilder::new(Dispatch { job_id })
        .task_id(task_id(job_id))
        .build();
    storage
        .push_task(task)
        .await
        .with_context(|| format!("pushing job {job_id} to Redis"))
}

/// Takes jobs' tasks out of Redis wherever they wait (ready list, scheduled set) and drops their
/// payloads. A task already fetched by a worker is left to it: the worker finds the job cancelled
/// in PostgreSQL and skips it. Returns how many tasks were still waiting.
pub async fn remove(
    conn: &mut ConnectionManager,
    queue: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<u64> {
    let config = storage_config(queue);
    let mut removed = 0;
    for chunk in job_ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let task = task_id(*id).to_string();
            pipe.lrem(config.active_jobs_list(), 0, &task)
                .zrem(config.scheduled_jobs_set(), &task)
                .hdel(config.job_data_hash(), &task)
                .del(format!("{}:{task}", config.job_meta_hash()));
        }
        let replies: Vec<u64> = pipe
            .query_async(conn)
            .await
            .context("removing tasks from Redis")?;
        // Per job: lrem count, zrem count, hdel count, del count.
        removed += replies.chunks(4).filter(|r| r[0] + r[1] > 0).count() as u64;
    }
    Ok(removed)
}

/// Puts jobs back on the queue: drops whatever Redis still holds of their tasks (apalis will not
/// overwrite an existing payload), then pushes them afresh. A task still in a worker's hands may
/// then be delivered twice; the claim in PostgreSQL lets only one delivery run.
pub async fn redispatch(
    storage: &mut Storage,
    conn: &mut ConnectionManager,
    queue: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<()> {
    remove(conn, queue, job_ids).await?;
    for id in job_ids {
        dispatch(storage, *id).await?;
    }
    Ok(())
}

/// Which of these jobs Redis no longer has a live task for: no payload (Redis lost it) or a
/// task apalis has finished with, although PostgreSQL still has the job queued.
pub async fn missing(
    conn: &mut ConnectionManager,
    queue: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<Vec<Uuid>> {
    let config = storage_config(queue);
    let mut pipe = redis::pipe();
    for id in job_ids {
        let task = task_id(*id).to_string();
        pipe.hexists(config.job_data_hash(), &task)
            .sismember(config.done_jobs_set(), &task)
            .sismember(config.dead_jobs_set(), &task);
    }
    let replies: Vec<bool> = pipe
        .query_async(conn)
        .await
        .context("reading task states from Redis")?;
    Ok(job_ids
        .iter()
        .zip(replies.chunks(3))
        .filter(|(_, r)| !r[0] || r[1] || r[2])
        .map(|(id, _)| *id)
        .collect())
}

/// Drops payloads and metadata of tasks apalis has finished with (its done and dead sets), which
/// it would otherwise keep forever. Returns how many went.
pub async fn vacuum(conn: &mut ConnectionManager, queue: &str) -> anyhow::Result<u64> {
    let config = storage_config(queue);
    let mut vacuumed = 0;
    for set in [config.done_jobs_set(), config.dead_jobs_set()] {
        loop {
            let tasks: Vec<String> = redis::cmd("SPOP")
                .arg(&set)
                .arg(500)
                .query_async(conn)
                .await
                .context("reading finished tasks from Redis")?;
            if tasks.is_empty() {
                break;
            }
            let mut pipe = redis::pipe();
            for task in &tasks {
                pipe.hdel(config.job_data_hash(), task)
                    .del(format!("{}:{task}", config.job_meta_hash()))
                    .ignore();
            }
            pipe.query_async::<()>(conn)
                .await
                .context("vacuuming Redis")?;
            vacuumed += tasks.len() as u64;
        }
    }
    Ok(vacuumed)
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

pub async fn ping(conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
}
