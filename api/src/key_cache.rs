//! API keys that authenticated lately, kept for a few seconds so that a client polling its job
//! costs the database one query, not two (the key's, then the job's).
//!
//! A change to `api_keys` (a revocation above all) empties the cache of every API replica as soon
//! as PostgreSQL announces it (the trigger of the migration `key_changes_notify`, heard by the
//! process's one listener, [`genq_shared::wait::JobWatch::key_changes`]). The time limit bounds how long a key keeps
//! working if that announcement is lost on a connection that died unnoticed; a reconnected
//! listener empties the cache too. Only keys that authenticated are kept: a guesser's keys cost a
//! query each, as before, and cannot fill memory.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use genq_shared::db::{self, keys::KeyRecord};
use sqlx::PgPool;
use tokio::sync::watch;

pub struct KeyCache {
    /// How long a key is trusted without asking PostgreSQL again; zero asks every time.
    ttl: Duration,
    changes: watch::Receiver<u64>,
    cached: Mutex<Cached>,
}

impl KeyCache {
    /// `changes` counts changes to `api_keys` ([`genq_shared::wait::JobWatch::key_changes`]).
    pub fn new(ttl: Duration, changes: watch::Receiver<u64>) -> KeyCache {
        KeyCache {
            ttl,
            changes,
            cached: Mutex::default(),
        }
    }

    /// The live key `presented` is, if any: from the cache, or else from PostgreSQL.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        presented: &str,
    ) -> sqlx::Result<Option<KeyRecord>> {
        self.authenticate_with(presented, |presented| {
            db::keys::authenticate(pool, presented)
        })
        .await
    }

    /// [`KeyCache::authenticate`], asking `look_up` on a miss.
    async fn authenticate_with<'a, F, Fut>(
        &self,
        presented: &'a str,
        look_up: F,
    ) -> sqlx::Result<Option<KeyRecord>>
    where
        F: FnOnce(&'a str) -> Fut,
        Fut: Future<Output = sqlx::Result<Option<KeyRecord>>>,
    {
        if self.ttl.is_zero() {
            return look_up(presented).await;
        }
        // Keyed by the key's hash, so the process's memory holds no key. A hit answers faster
        // than a miss, which only someone already holding a live key can observe.
        let hash = db::keys::hash(presented);
        // Read before asking PostgreSQL: a change announced during the query then keeps its answer
        // out of the cache.
        let generation = *self.changes.borrow();
        let asked_at = Instant::now();
        if let Some(key) = self.lock().get(generation, &hash, asked_at, self.ttl) {
            return Ok(Some(key));
        }
        let found = look_up(presented).await?;
        if let Some(key) = &found {
            let now_generation = *self.changes.borrow();
            self.lock()
                .insert(generation, now_generation, hash, key.clone(), asked_at);
        }
        Ok(found)
    }

    /// Resolves once the key `key_id` is revoked or deleted; never for `None` (no key: auth off).
    /// Checked whenever the keys change, and at least every `ttl` (every second with the cache
    /// off), should a change go unannounced: what holds a request open (a long poll, an event
    /// stream) ends within the bound a cached key is trusted for.
    pub async fn until_revoked(&self, pool: &PgPool, key_id: Option<uuid::Uuid>) {
        let Some(key_id) = key_id else {
            return std::future::pending().await;
        };
        let mut changes = self.changes.clone();
        // Changes before now were before the key authenticated: wait for the next one.
        changes.borrow_and_update();
        let every = self.ttl.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                // A listener gone for good leaves the periodic check.
                Ok(()) = changes.changed() => {}
                () = tokio::time::sleep(every) => {}
            }
            match db::keys::is_live(pool, key_id).await {
                Ok(false) => return,
                Ok(true) => {}
                // PostgreSQL is down: the request keeps what it was given, as one that started
                // a moment earlier would have.
                Err(e) => tracing::debug!(error = %e, "could not check whether a key is live"),
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cached> {
        // Poisoned only by a panic while the lock is held, and neither `get` nor `insert` can stop
        // half-way through a change to the map.
        self.cached.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cached keys and the count of key changes they were read under.
#[derive(Default)]
struct Cached {
    generation: u64,
    keys: HashMap<[u8; 32], (KeyRecord, Instant)>,
}

impl Cached {
    /// The key with this hash, if it was read less than `ttl` before `now`, and since the latest
    /// change to the keys known here (`generation` or a later one).
    fn get(
        &mut self,
        generation: u64,
        hash: &[u8; 32],
        now: Instant,
        ttl: Duration,
    ) -> Option<KeyRecord> {
        self.catch_up_to(generation);
        let (key, read_at) = self.keys.get(hash)?;
        (now.saturating_duration_since(*read_at) < ttl).then(|| key.clone())
    }

    /// Keeps a key read at `read_at` under `read_under`, unless the keys changed since, as far as
    /// this reader (`now_generation`) or another one knows: the read may then predate a
    /// revocation.
    fn insert(
        &mut self,
        read_under: u64,
        now_generation: u64,
        hash: [u8; 32],
        key: KeyRecord,
        read_at: Instant,
    ) {
        self.catch_up_to(now_generation);
        if read_under == self.generation {
            self.keys.insert(hash, (key, read_at));
        }
    }

    /// Forgets every key read before `generation`. The count only grows; a reader that saw an
    /// older one and comes late changes nothing.
    fn catch_up_to(&mut self, generation: u64) {
        if generation > self.generation {
            self.keys.clear();
            self.generation = generation;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    const TTL: Duration = Duration::from_secs(10);

    fn key(name: &str) -> KeyRecord {
        KeyRecord {
            id: Uuid::now_v7(),
            name: name.into(),
            tenant: name.into(),
            prefix: "genq_00000000".into(),
            admin: false,
            rate_per_min: None,
            jobs_per_min: None,
            max_queued: None,
            tokens_per_day: None,
            created_at: Utc::now(),
            revoked_at: None,
        }
    }

    fn cache(ttl: Duration) -> (KeyCache, watch::Sender<u64>) {
        let (sender, changes) = watch::channel(0);
        (KeyCache::new(ttl, changes), sender)
    }

    #[tokio::test]
    async fn a_key_is_looked_up_once_then_served_from_the_cache() {
        let (cache, _changes) = cache(TTL);
        let looked_up = std::cell::Cell::new(0);
        let look_up = |_: &str| {
            looked_up.set(looked_up.get() + 1);
            async { Ok(Some(key("alice"))) }
        };

        let first = cache.authenticate_with("genq_a", look_up).await.unwrap();
        let second = cache.authenticate_with("genq_a", look_up).await.unwrap();
        let other = cache.authenticate_with("genq_b", look_up).await.unwrap();

        assert_eq!(looked_up.get(), 2, "genq_a once, genq_b once");
        assert_eq!(first, second);
        assert_eq!(other.map(|k| k.name), Some("alice".to_owned()));
    }

    #[tokio::test]
    async fn a_key_found_while_the_keys_changed_is_looked_up_again() {
        let (cache, changes) = cache(TTL);
        let looked_up = std::cell::Cell::new(0);
        // The revocation is announced while PostgreSQL answers.
        let look_up = |_: &str| {
            looked_up.set(looked_up.get() + 1);
            changes.send_modify(|n| *n += 1);
            async { Ok(Some(key("alice"))) }
        };
        cache.authenticate_with("genq_a", look_up).await.unwrap();
        let found_again = cache
            .authenticate_with("genq_a", |_| async { Ok(None) })
            .await
            .unwrap();

        assert_eq!((looked_up.get(), found_again), (1, None));
    }

    #[tokio::test]
    async fn with_no_time_to_live_every_request_is_looked_up() {
        let (cache, _changes) = cache(Duration::ZERO);
        cache
            .authenticate_with("genq_a", |_| async { Ok(Some(key("alice"))) })
            .await
            .unwrap();

        let again = cache
            .authenticate_with("genq_a", |_| async { Ok(None) })
            .await
            .unwrap();

        assert_eq!(again, None);
    }

    #[test]
    fn a_key_is_served_until_its_time_is_up() {
        let mut cached = Cached::default();
        let read_at = Instant::now();
        cached.insert(0, 0, [1; 32], key("alice"), read_at);

        let just_before = cached.get(0, &[1; 32], read_at + TTL - Duration::from_millis(1), TTL);
        let at_the_limit = cached.get(0, &[1; 32], read_at + TTL, TTL);

        assert_eq!(just_before.map(|k| k.name), Some("alice".to_owned()));
        assert_eq!(at_the_limit, None);
        assert_eq!(cached.get(0, &[2; 32], read_at, TTL), None, "another hash");
    }

    #[test]
    fn a_change_to_the_keys_empties_the_cache() {
        let mut cached = Cached::default();
        let now = Instant::now();
        cached.insert(0, 0, [1; 32], key("alice"), now);

        assert_eq!(cached.get(1, &[1; 32], now, TTL), None);
        // Gone for good, not only hidden from a reader of the newer count.
        assert!(cached.keys.is_empty());
    }

    #[test]
    fn a_reader_that_saw_an_older_count_empties_nothing() {
        let mut cached = Cached::default();
        let now = Instant::now();
        cached.insert(1, 1, [1; 32], key("alice"), now);

        assert_eq!(
            cached.get(0, &[1; 32], now, TTL).map(|k| k.name),
            Some("alice".to_owned())
        );
        assert_eq!(cached.keys.len(), 1);
    }

    #[test]
    fn a_key_read_before_a_change_another_reader_saw_is_not_kept() {
        let mut cached = Cached::default();
        let now = Instant::now();
        cached.get(2, &[1; 32], now, TTL);

        // Read under 1, and still 1 when this reader looked: yet another reader has seen 2.
        cached.insert(1, 1, [1; 32], key("alice"), now);

        assert!(cached.keys.is_empty());
    }

    #[test]
    fn a_key_read_before_a_change_is_not_kept() {
        let mut cached = Cached::default();
        let now = Instant::now();

        // The keys changed while PostgreSQL was being asked: the answer may predate a revocation.
        cached.insert(0, 1, [1; 32], key("alice"), now);
        assert_eq!(cached.get(1, &[1; 32], now, TTL), None);

        cached.insert(1, 1, [1; 32], key("alice"), now);
        assert_eq!(
            cached.get(1, &[1; 32], now, TTL).map(|k| k.name),
            Some("alice".to_owned())
        );
    }
}
