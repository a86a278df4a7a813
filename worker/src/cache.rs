//! The result cache: a deterministic request (explicit seed, or greedy) for a prompt that this
//! model already answered with the same parameters within the TTL is answered from PostgreSQL
//! without inference. Requests without a seed sample fresh text every time and are never cached.

use std::time::Duration;

use genq_shared::{
    db::{generations, jobs::NewGeneration},
    types::JobParams,
};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

pub struct ResultCache {
    /// The model's version (SHA-256 of its file): the same name can mean different weights.
    model_version: String,
    ttl: Duration,
}

impl ResultCache {
    /// `None` when the TTL is zero: the cache is off.
    pub fn open(model_version: &str, ttl: Duration) -> Option<ResultCache> {
        (!ttl.is_zero()).then(|| ResultCache {
            model_version: model_version.to_owned(),
            ttl,
        })
    }

    /// The key of one prompt's result, if the request is deterministic.
    pub fn key(&self, prompt: &str, params: &JobParams) -> Option<Vec<u8>> {
        let deterministic = params.seed.is_some() || params.temperature == 0.0;
        if !deterministic {
            return None;
        }
        let mut hasher = Sha256::new();
        hasher.update(self.model_version.as_bytes());
        // JSON of the whole parameter set: a parameter added later joins the key by itself.
        hasher.update(serde_json::to_vec(params).expect("params serialize"));
        hasher.update((prompt.len() as u64).to_le_bytes());
        hasher.update(prompt.as_bytes());
        Some(hasher.finalize().to_vec())
    }

    /// Cached results of `tenant` for whichever of `keys` (prompt index, key) have one.
    pub async fn lookup(
        &self,
        db: &PgPool,
        tenant: &str,
        keys: &[(usize, Vec<u8>)],
    ) -> sqlx::Result<Vec<NewGeneration>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<Vec<u8>> = keys.iter().map(|(_, k)| k.clone()).collect();
        let found = generations::cached(db, &wanted, self.ttl, tenant).await?;
        Ok(keys
            .iter()
            .filter_map(|(index, key)| {
                let hit = found.iter().find(|f| &f.cache_key == key)?;
                Some(NewGeneration {
                    index: *index as i32,
                    text: hit.generated_text.clone(),
                    completion_tokens: hit.completion_tokens,
                    prompt_tokens: hit.prompt_tokens,
                    finish_reason: hit.finish_reason,
                    cache_key: None,
                    cached: true,
                    redacted: hit.redacted,
                })
            })
            .collect())
    }
}
