//! Priorities and fairness, in Redis beside apalis. A model's queue is an apalis namespace whose
//! ready list workers fetch from; genq keeps that list short and fills it itself, from lanes:
//!
//! - `{ns}:genq:lane:{priority}:{tenant}`: one tenant's waiting tasks of one priority, oldest
//!   first;
//! - `{ns}:genq:lane:{priority}`: the tenants with waiting tasks of that priority, a ring.
//!
//! [`refill`] moves tasks to the ready list until it holds as many as asked: from the interactive
//! ring first, one task per tenant in turn. Workers refill as a slot frees and on every poll, so
//! the ready list holds about as many tasks as there are free slots, and a job that arrives
//! behind 50,000 others waits for a free slot, not for the backlog: an interactive job goes next,
//! and a tenant with one job waits at most one turn of the ring.
//!
//! A task's payload and metadata are written as apalis's own push writes them, so apalis's fetch,
//! acknowledgement and re-queueing of a dead worker's tasks work unchanged. Every script is one
//! atomic step: a crash between steps cannot strand a task outside every list.

use std::sync::LazyLock;

use anyhow::Context;
use apalis_redis::ConnectionManager;
use redis::Script;
use uuid::Uuid;

use super::{Dispatch, storage_config, task_id};

/// How urgently a job runs: interactive ones go ahead of batch ones of the same model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// `POST /generate`, `/v1/completions`, `/v1/chat/completions`: a client waits on it.
    Interactive = 0,
    Batch = 1,
}

impl Priority {
    pub fn from_column(value: i16) -> Priority {
        match value {
            0 => Priority::Interactive,
            _ => Priority::Batch,
        }
    }

    pub fn as_column(self) -> i16 {
        self as i16
    }
}

/// One delivery to put in a lane.
#[derive(Debug, Clone, Copy)]
pub struct Lane<'a> {
    pub tenant: &'a str,
    pub priority: Priority,
}

fn lane_prefix(ns: &str) -> String {
    format!("{ns}:genq:lane")
}

/// Puts deliveries (job id, dispatch id, lane) in their lanes, payloads written as apalis writes
/// them; a dispatch id already pushed is left alone. One round trip.
pub async fn push(
    conn: &mut ConnectionManager,
    ns: &str,
    deliveries: &[(Uuid, Uuid, Lane<'_>)],
) -> anyhow::Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let config = storage_config(ns);
    let mut script = PUSH.prepare_invoke();
    script
        .key(config.job_data_hash())
        .key(config.job_meta_hash())
        .arg(lane_prefix(ns));
    for (job_id, dispatch_id, lane) in deliveries {
        let payload = serde_json::to_string(&Dispatch { job_id: *job_id })?;
        script
            .arg(task_id(*dispatch_id).to_string())
            .arg(payload)
            .arg(lane.priority.as_column())
            .arg(lane.tenant);
    }
    script
        .invoke_async::<()>(conn)
        .await
        .with_context(|| format!("pushing {} job(s) to Redis", deliveries.len()))
}

/// Moves waiting tasks to the ready list until it holds `target` (interactive first, tenants in
/// turn) and wakes workers if it moved any; returns how many it moved.
pub async fn refill(
    conn: &mut ConnectionManager,
    ns: &str,
    target: usize,
) -> anyhow::Result<usize> {
    let config = storage_config(ns);
    REFILL
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .arg(lane_prefix(ns))
        .arg(target)
        .invoke_async(conn)
        .await
        .context("moving waiting tasks to the ready list")
}

/// Takes tasks out of their lanes (the first match from the head, where a lane's oldest tasks
/// are); returns, per task, whether it was there.
pub async fn take_out(
    conn: &mut ConnectionManager,
    ns: &str,
    tasks: &[(String, Lane<'_>)],
) -> anyhow::Result<Vec<bool>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    let prefix = lane_prefix(ns);
    let mut pipe = redis::pipe();
    for (task, lane) in tasks {
        pipe.lrem(
            format!("{prefix}:{}:{}", lane.priority.as_column(), lane.tenant),
            1,
            task,
        );
    }
    let removed: Vec<u64> = pipe
        .query_async(conn)
        .await
        .context("taking tasks out of their lanes")?;
    Ok(removed.into_iter().map(|n| n > 0).collect())
}

/// How many tasks wait in the lanes (not yet in the ready list), for operators and tests.
pub async fn waiting(conn: &mut impl redis::aio::ConnectionLike, ns: &str) -> anyhow::Result<u64> {
    let waiting: u64 = WAITING
        .arg(lane_prefix(ns))
        .invoke_async(conn)
        .await
        .context("counting waiting tasks")?;
    Ok(waiting)
}

/// The tasks waiting in the lanes, interactive first, each lane oldest first (tests, tools).
pub async fn waiting_tasks(
    conn: &mut impl redis::aio::ConnectionLike,
    ns: &str,
) -> anyhow::Result<Vec<String>> {
    let tasks: Vec<String> = WAITING_TASKS
        .arg(lane_prefix(ns))
        .invoke_async(conn)
        .await
        .context("listing waiting tasks")?;
    Ok(tasks)
}

// ARGV[1]: the lane prefix; then per task: task id, payload, priority, tenant. The metadata is
// what apalis's batch_push.lua writes for a task with default attempts and no idempotency key.
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local prefix = ARGV[1]
           for i = 2, #ARGV, 4 do
               local task, payload, priority, tenant = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
               if redis.call("HSETNX", KEYS[1], task, payload) == 1 then
                   redis.call("HSET", KEYS[2] .. ":" .. task, "attempts", 0, "max_attempts", 25,
                              "status", "Pending", "idempotency_key", "")
                   local ring = prefix .. ":" .. priority
                   if redis.call("RPUSH", ring .. ":" .. tenant, task) == 1
                      and not redis.call("LPOS", ring, tenant) then
                       redis.call("RPUSH", ring, tenant)
                   end
               end
           end"#,
    )
});

// A ring may name a tenant whose lane a removal emptied: it is dropped when its turn comes.
static REFILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local prefix, target = ARGV[1], tonumber(ARGV[2])
           local ready = redis.call("LLEN", KEYS[1])
           local moved = 0
           while ready < target do
               local task = false
               for priority = 0, 1 do
                   local ring = prefix .. ":" .. priority
                   while not task do
                       local tenant = redis.call("LMOVE", ring, ring, "LEFT", "RIGHT")
                       if not tenant then break end
                       local lane = ring .. ":" .. tenant
                       task = redis.call("LPOP", lane)
                       if redis.call("LLEN", lane) == 0 then
                           redis.call("LREM", ring, -1, tenant)
                       end
                   end
                   if task then break end
               end
               if not task then break end
               redis.call("RPUSH", KEYS[1], task)
               ready = ready + 1
               moved = moved + 1
           end
           if moved > 0 then
               redis.call("DEL", KEYS[2])
               redis.call("LPUSH", KEYS[2], 1)
           end
           return moved"#,
    )
});

static WAITING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local total = 0
           for priority = 0, 1 do
               local ring = ARGV[1] .. ":" .. priority
               for _, tenant in ipairs(redis.call("LRANGE", ring, 0, -1)) do
                   total = total + redis.call("LLEN", ring .. ":" .. tenant)
               end
           end
           return total"#,
    )
});

static WAITING_TASKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local tasks = {}
           for priority = 0, 1 do
               local ring = ARGV[1] .. ":" .. priority
               for _, tenant in ipairs(redis.call("LRANGE", ring, 0, -1)) do
                   for _, task in ipairs(redis.call("LRANGE", ring .. ":" .. tenant, 0, -1)) do
                       table.insert(tasks, task)
                   end
               end
           end
           return tasks"#,
    )
});
