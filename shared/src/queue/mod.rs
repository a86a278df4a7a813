//! Redis dispatch through apalis. Redis only carries job ids to workers; every job's state lives in
//! PostgreSQL, so anything Redis loses can be dispatched again from there.
//!
//! Each delivery of a job is one apalis task whose id PostgreSQL records (`jobs.dispatch_id`), so
//! the reconciler and operators' tools can find and remove a job's task without apalis's (broken
//! in 1.0) listing APIs. [`due`] keeps apalis's fetch working under a deep backlog.
//!
//! Each model has its own namespace ([`model_queue`]): its workers fetch only from it. Jobs
//! wait there in [`lanes`] (priority, then tenant), and move to apalis's ready list as workers
//! free slots.

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use redis::{
    IntoConnectionInfo,
    io::tcp::{TcpSettings, socket2::TcpKeepalive},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::{QueueConfig, SecretUrl},
    db::{self, Keepalive},
};

mod due;
pub mod lanes;
pub use due::{PROMOTE_PAGE, promote_all_due, promote_due};
pub use lanes::{Lane, Priority};

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

/// The apalis namespace of a model's queue, under the deployment's queue namespace `base`
/// (`GENQ_QUEUE`), so that deleting `base:*` takes every model's queue with it.
pub fn model_queue(base: &str, model: &str) -> String {
    format!("{base}:model:{model}")
}

/// A storage for pushing to, or consuming, the namespace `ns`.
pub fn storage_for(conn: &ConnectionManager, ns: &str) -> Storage {
    RedisStorage::new(conn.clone()).with_config(storage_config(ns))
}

/// Redis's sign that it still holds every dispatch: `intact` once the reconciler has checked
/// every queued job against it. Gone when Redis lost its data (a restart without persistence, a
/// flush), which makes the next pass check every queued job again.
pub fn intact_marker(queue: &str) -> String {
    // Renamed when jobs moved to per-model queues: the first pass after that upgrade finds no
    // marker and checks every queued job, dispatching again to its model's queue those still
    // waiting in the old single queue, which no worker reads any more.
    format!("{queue}:genq:intact-per-model")
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

/// How genq's Redis connections probe a link gone quiet, and how long what they sent may go
/// unacknowledged before the kernel ends the connection. redis's connection manager replaces a
/// connection only once it is closed, not after response timeouts, and the kernel's
/// retransmissions to a peer cut off back off to a minute and more: a replica kept a dead
/// connection 56 s after its link healed (docs/reliability.md). Once the kernel ends it, a command
/// or two fail and the next connects anew. Blocking commands and an idle subscription are
/// unaffected: the server's kernel acknowledges them at once.
pub const CLIENT_KEEPALIVE: Keepalive = Keepalive {
    idle: Duration::from_secs(5),
    interval: Duration::from_secs(2),
    count: 3,
};

/// A Redis client whose connections carry [`CLIENT_KEEPALIVE`], and send small commands at once
/// (`TCP_NODELAY`, as redis-py does; redis's default leaves Nagle's algorithm on).
pub fn client(url: &SecretUrl) -> anyhow::Result<redis::Client> {
    let keepalive = TcpKeepalive::new()
        .with_time(CLIENT_KEEPALIVE.idle)
        .with_interval(CLIENT_KEEPALIVE.interval)
        .with_retries(CLIENT_KEEPALIVE.count);
    let tcp = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive)
        .set_user_timeout(CLIENT_KEEPALIVE.gives_up_after());
    let info = url
        .expose()
        .into_connection_info()
        .with_context(|| format!("invalid Redis URL {url}"))?
        .set_tcp_settings(tcp);
    Ok(redis::Client::open(info)?)
}

/// Connects to Redis lazily: the connection is made (and remade) on first use, so a caller whose
/// other work does not need Redis (`genqctl queue reconcile`) can run while it is down.
pub fn connect_lazy(config: &QueueConfig) -> anyhow::Result<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(client(&config.redis_url)?, Default::default())
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))
}

pub async fn connect(config: &QueueConfig) -> anyhow::Result<ConnectionManager> {
    client(&config.redis_url)?
        .get_connection_manager()
        .await
        .with_context(|| format!("cannot reach Redis at {}", config.redis_url))
}

/// Whether an error of connecting or subscribing is worth retrying at start
/// ([`crate::startup::patiently`]): Redis refused, dropped or did not answer the connection. A
/// refused password is not (redis's connection manager has already tried it seven times).
pub fn connect_unavailable(error: &anyhow::Error) -> bool {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<redis::RedisError>())
        .is_some_and(redis::RedisError::is_io_error)
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

/// Pushes the first delivery of recorded jobs (each under its own id, as `db::jobs::insert`
/// records them) of one model queue and one lane, a thousand per Redis round trip, and makes one
/// ready so that an idle worker starts at once (busy ones take the rest as slots free).
pub async fn dispatch(
    conn: &mut ConnectionManager,
    ns: &str,
    job_ids: &[Uuid],
    lane: Lane<'_>,
) -> anyhow::Result<()> {
    for chunk in job_ids.chunks(1000) {
        let deliveries: Vec<_> = chunk.iter().map(|&id| (id, id, lane)).collect();
        lanes::push(conn, ns, &deliveries).await?;
    }
    lanes::refill(conn, ns, 1).await?;
    Ok(())
}

/// Pushes a delivery due after `delay` to apalis's scheduled set, from which a worker's fetch or
/// the reconciler ([`promote_due`]) moves it to the ready list once due.
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

/// Puts queued jobs back on their model's queue under fresh dispatch ids, recorded in
/// PostgreSQL first. Whatever Redis still holds of an earlier delivery is left alone: a worker
/// that gets it finds the job claimed already, or claims it once. A job that was claimed before
/// waits [`retry_delay`] (in apalis's scheduled set, then straight to the ready list), so a job
/// that crashes its workers does not take them down back to back; the others go to their lanes.
/// Returns how many were pushed.
pub async fn redispatch(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    base: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<usize> {
    let fresh = db::jobs::renew_dispatches(pool, job_ids)
        .await
        .context("recording new dispatches")?;
    let mut by_model: HashMap<&str, Vec<&db::jobs::Renewed>> = HashMap::new();
    for renewed in &fresh {
        by_model.entry(&renewed.model).or_default().push(renewed);
    }
    for (model, jobs) in by_model {
        let ns = model_queue(base, model);
        let (now, later): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|r| retry_delay(r.claims).is_zero());
        for chunk in now.chunks(1000) {
            let deliveries: Vec<_> = chunk
                .iter()
                .map(|r| (r.job_id, r.dispatch_id, r.lane()))
                .collect();
            lanes::push(conn, &ns, &deliveries).await?;
        }
        let mut storage = storage_for(conn, &ns);
        for r in later {
            push_after(&mut storage, r.job_id, r.dispatch_id, retry_delay(r.claims)).await?;
        }
        lanes::refill(conn, &ns, 1).await?;
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

/// Takes jobs' tasks out of Redis where they still wait (lane, ready list, scheduled set) and
/// drops their payloads. A task already fetched by a worker keeps its payload (the worker, or
/// apalis re-queueing a dead worker's tasks, still needs it); the worker finds the job final and
/// skips it. Returns how many tasks were still waiting.
pub async fn remove(
    pool: &PgPool,
    conn: &mut ConnectionManager,
    base: &str,
    job_ids: &[Uuid],
) -> anyhow::Result<u64> {
    let dispatches = db::jobs::dispatches(pool, job_ids)
        .await
        .context("reading the jobs' dispatch ids")?;
    let mut by_model: HashMap<&str, Vec<&db::jobs::Renewed>> = HashMap::new();
    for d in &dispatches {
        by_model.entry(&d.model).or_default().push(d);
    }
    let mut removed = 0;
    for (model, jobs) in by_model {
        let ns = model_queue(base, model);
        for chunk in jobs.chunks(500) {
            removed += remove_from(conn, &ns, chunk).await?;
        }
    }
    Ok(removed)
}

async fn remove_from(
    conn: &mut ConnectionManager,
    ns: &str,
    jobs: &[&db::jobs::Renewed],
) -> anyhow::Result<u64> {
    let config = storage_config(ns);
    let tasks: Vec<(String, Lane)> = jobs
        .iter()
        .map(|d| (task_id(d.dispatch_id).to_string(), d.lane()))
        .collect();
    let in_lanes = lanes::take_out(conn, ns, &tasks).await?;
    let mut pipe = redis::pipe();
    for (task, _) in &tasks {
        pipe.lrem(config.active_jobs_list(), 0, task)
            .zrem(config.scheduled_jobs_set(), task);
    }
    let replies: Vec<u64> = pipe
        .query_async(conn)
        .await
        .context("removing tasks from Redis")?;
    // Only a task taken out of a lane, the list or the set is nowhere else: its payload can go.
    let waiting: Vec<&String> = tasks
        .iter()
        .zip(replies.chunks(2))
        .zip(&in_lanes)
        .filter(|((_, r), in_lane)| **in_lane || r[0] + r[1] > 0)
        .map(|(((task, _), _), _)| task)
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
    Ok(waiting.len() as u64)
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

/// Tasks waiting in a model's queue (in lanes, ready or scheduled), for operators' figures.
pub async fn waiting(conn: &mut ConnectionManager, ns: &str) -> anyhow::Result<u64> {
    let in_lanes = lanes::waiting(conn, ns).await?;
    let config = storage_config(ns);
    let (ready, scheduled): (u64, u64) = redis::pipe()
        .llen(config.active_jobs_list())
        .zcard(config.scheduled_jobs_set())
        .query_async(conn)
        .await
        .context("reading queue lengths from Redis")?;
    Ok(in_lanes + ready + scheduled)
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
