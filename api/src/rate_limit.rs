//! Per-key rate limits: token buckets in Redis, so every API replica draws on the same bucket. A
//! key may have two: requests a minute (each request takes one) and jobs a minute (a submission
//! takes one per job, so bulk intake is limited too). A bucket holds a minute's worth and refills
//! continuously; one Lua script reads, refills and takes atomically, on Redis's clock, so replicas
//! with skewed clocks still agree.

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

use crate::{AppState, auth::Caller, error::ApiError};

/// KEYS[1]: the bucket. ARGV[1]: capacity (per minute), ARGV[2]: tokens to take. Returns whether
/// they were taken, whole tokens left, and milliseconds until that many tokens and until a full
/// bucket. Nothing is taken when there are not enough.
const TAKE: &str = r#"
local capacity = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local per_ms = capacity / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
local until_full = math.ceil((capacity - tokens) / per_ms)
redis.call('PEXPIRE', KEYS[1], until_full + 1000)
local until_enough = 0
if tokens < cost then until_enough = math.ceil((cost - tokens) / per_ms) end
return {allowed, math.floor(tokens), until_enough, until_full}
"#;

#[derive(Clone)]
pub struct RateLimiter {
    script: Script,
    redis: ConnectionManager,
    queue: String,
}

/// One request's draw on its key's bucket, and what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Whole seconds until the next request (or as many jobs) would be allowed (0 when now).
    pub retry_after_secs: u64,
    /// Whole seconds until the bucket is full again.
    pub reset_secs: u64,
}

impl RateLimiter {
    pub fn new(redis: ConnectionManager, queue: &str) -> Self {
        RateLimiter {
            script: Script::new(TAKE),
            redis,
            queue: queue.to_owned(),
        }
    }

    /// Takes one request from the key's bucket of `per_minute`.
    pub async fn take(&self, key_id: Uuid, per_minute: u32) -> redis::RedisResult<Decision> {
        self.take_from("ratelimit", key_id, per_minute, 1).await
    }

    /// Takes `jobs` from the key's bucket of `per_minute` jobs (at most `per_minute`: a bucket
    /// holds no more).
    pub async fn take_jobs(
        &self,
        key_id: Uuid,
        per_minute: u32,
        jobs: u32,
    ) -> redis::RedisResult<Decision> {
        self.take_from("jobrate", key_id, per_minute, jobs).await
    }

    async fn take_from(
        &self,
        bucket: &str,
        key_id: Uuid,
        per_minute: u32,
        cost: u32,
    ) -> redis::RedisResult<Decision> {
        let mut redis = self.redis.clone();
        let (allowed, remaining, until_enough_ms, until_full_ms): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}:{bucket}:{key_id}", self.queue))
            .arg(per_minute)
            .arg(cost)
            .invoke_async(&mut redis)
            .await?;
        let secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
        Ok(Decision {
            allowed: allowed == 1,
            limit: per_minute,
            remaining: remaining.max(0) as u32,
            retry_after_secs: secs(until_enough_ms),
            reset_secs: secs(until_full_ms),
        })
    }
}

/// Charges a submission of `jobs` jobs to the caller's jobs-per-minute bucket, if its key has one.
/// Redis failing lets the jobs in, as for the request limit.
pub(crate) async fn charge_jobs(
    state: &AppState,
    caller: &Caller,
    jobs: usize,
) -> Result<(), ApiError> {
    let Some((key_id, per_minute)) = caller
        .key
        .as_ref()
        .and_then(|k| Some((k.id, k.jobs_per_min? as u32)))
    else {
        return Ok(());
    };
    if jobs > per_minute as usize {
        // Never accepted, however long the client waits: not a 429 to retry.
        return Err(ApiError::invalid(
            "jobs",
            format!(
                "this request has {jobs} jobs and this key may submit {per_minute} a minute: \
                 send them in smaller requests"
            ),
        ));
    }
    match state
        .rate_limiter
        .take_jobs(key_id, per_minute, jobs as u32)
        .await
    {
        Ok(decision) if decision.allowed => Ok(()),
        Ok(decision) => Err(ApiError::JobRateLimited {
            per_minute,
            retry_after_secs: decision.retry_after_secs,
        }),
        Err(e) => {
            genq_shared::metrics::redis_error();
            tracing::warn!(error = %e, "jobs-per-minute limit not applied: Redis did not answer");
            Ok(())
        }
    }
}
