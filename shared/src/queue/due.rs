//! Moving due tasks from apalis's scheduled set to its ready list, a page at a time.
//!
//! apalis-redis 1.0 puts every pushed task in the scheduled set, delayed or not (its push clamps
//! `run_at` to now), and a worker's fetch moves every due task to the ready list with one Lua
//! `unpack`. Past about 8,000 due tasks that fails ("too many results to unpack") on every fetch:
//! no worker of the queue can take a job again. A bulk request, a burst while every slot is busy
//! or a re-dispatch after Redis lost its data gets there. So genq moves due tasks itself, at most
//! a page per call: after each push (as many as it pushed) and in every reconciler pass (all).

use std::{
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use apalis_redis::{Config, ConnectionManager};
use redis::Script;

/// Due tasks moved per Lua call; well below the 8,000 where apalis's own move fails.
pub const PROMOTE_PAGE: usize = 1000;

/// Moves up to `limit` due tasks, oldest first, to the ready list and wakes workers the way
/// apalis does; returns how many. Each moved task leaves the scheduled set in the same script, so
/// a worker's fetch running beside it never moves one twice.
pub async fn promote_due(
    conn: &mut ConnectionManager,
    config: &Config,
    limit: usize,
) -> anyhow::Result<usize> {
    // apalis scores tasks in whole seconds of this host's clock.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let moved: usize = PROMOTE_SCRIPT
        .key(config.scheduled_jobs_set())
        .key(config.active_jobs_list())
        .key(config.signal_list())
        .arg(now)
        .arg(limit)
        .invoke_async(conn)
        .await
        .context("moving due tasks to the ready list")?;
    Ok(moved)
}

static PROMOTE_SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"local due = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, ARGV[2])
           for _, task in ipairs(due) do
               redis.call("ZREM", KEYS[1], task)
               redis.call("RPUSH", KEYS[2], task)
           end
           if #due > 0 then
               redis.call("DEL", KEYS[3])
               redis.call("LPUSH", KEYS[3], 1)
           end
           return #due"#,
    )
});

/// Moves every due task, a page per call; returns how many.
pub async fn promote_all_due(
    conn: &mut ConnectionManager,
    config: &Config,
) -> anyhow::Result<usize> {
    let mut moved = 0;
    loop {
        let page = promote_due(conn, config, PROMOTE_PAGE).await?;
        moved += page;
        if page < PROMOTE_PAGE {
            return Ok(moved);
        }
    }
}
