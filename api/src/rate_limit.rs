//! Per-key rate limit: a token bucket in Redis, so every API replica draws on the same bucket.
//! The bucket holds a minute's requests and refills continuously; one Lua script reads, refills
//! and takes atomically, on Redis's clock, so replicas with skewed clocks still agree.

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

/// KEYS[1]: the bucket. ARGV[1]: capacity (requests per minute). Returns whether a request was
/// allowed, whole tokens left, and milliseconds until one token and until a full bucket.
const TAKE: &str = r#"
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_ms)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
local until_full = math.ceil((capacity - tokens) / per_ms)
redis.call('PEXPIRE', KEYS[1], until_full + 1000)
local until_one = 0
if tokens < 1 then until_one = math.ceil((1 - tokens) / per_ms) end
return {allowed, math.floor(tokens), until_one, until_full}
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
    /// Whole seconds until the next request would be allowed (0 when one is now).
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
        let mut redis = self.redis.clone();
        let (allowed, remaining, until_one_ms, until_full_ms): (i64, i64, i64, i64) = self
            .script
            .key(format!("{}:ratelimit:{key_id}", self.queue))
            .arg(per_minute)
            .invoke_async(&mut redis)
            .await?;
        let secs = |ms: i64| (ms.max(0) as u64).div_ceil(1000);
        Ok(Decision {
            allowed: allowed == 1,
            limit: per_minute,
            remaining: remaining.max(0) as u32,
            retry_after_secs: secs(until_one_ms),
            reset_secs: secs(until_full_ms),
        })
    }
}
