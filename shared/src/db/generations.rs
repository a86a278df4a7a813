//! Stored generations: one row per prompt of a finished job; `/history` reads them newest first.

use std::time::Duration;

use sqlx::PgPool;

use crate::types::{FinishReason, GenerationRecord, HistoryPage};

/// Keyset pagination on the generation sequence: a page never repeats or skips rows because newer
/// ones were inserted meanwhile.
pub async fn history(pool: &PgPool, limit: i64, before: Option<i64>) -> sqlx::Result<HistoryPage> {
    let rows: Vec<(i64, GenerationRecord)> = sqlx::query_as::<_, HistoryRow>(
        r#"select seq, id, prompt, generated_text, model_name, created_at from generations
           where $1::bigint is null or seq < $1
           order by seq desc limit $2"#,
    )
    .bind(before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| (r.seq, r.record))
    .collect();
    let has_more = rows.len() as i64 > limit;
    let items: Vec<(i64, GenerationRecord)> = rows.into_iter().take(limit as usize).collect();
    let next = has_more
        .then(|| items.last().map(|(seq, _)| seq.to_string()))
        .flatten();
    Ok(HistoryPage {
        items: items.into_iter().map(|(_, r)| r).collect(),
        next,
    })
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    seq: i64,
    #[sqlx(flatten)]
    record: GenerationRecord,
}

/// The stored records of one job, in prompt order.
pub async fn of_job(pool: &PgPool, job_id: uuid::Uuid) -> sqlx::Result<Vec<GenerationRecord>> {
    sqlx::query_as(
        r#"select id, prompt, generated_text, model_name, created_at from generations
           where job_id = $1 order by prompt_index"#,
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
}

/// A result the cache can answer with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CachedResult {
    pub cache_key: Vec<u8>,
    pub generated_text: String,
    pub completion_tokens: i32,
    pub finish_reason: FinishReason,
}

/// The newest inferred result for each key, among those younger than `ttl`.
pub async fn cached(
    pool: &PgPool,
    keys: &[Vec<u8>],
    ttl: Duration,
) -> sqlx::Result<Vec<CachedResult>> {
    sqlx::query_as(
        r#"select distinct on (cache_key) cache_key, generated_text, completion_tokens, finish_reason
           from generations
           where cache_key = any($1) and created_at > now() - make_interval(secs => $2)
           order by cache_key, created_at desc"#,
    )
    .bind(keys)
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
}
