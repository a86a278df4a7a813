//! Stored generations: one row per prompt of a finished job; `/history` reads them newest first.

use std::time::Duration;

use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    Scope,
    jobs::{Claim, NewGeneration},
};

use crate::types::{FinishReason, GenerationRecord, HistoryPage};

/// Keyset pagination on the generation sequence: a page never repeats or skips rows because newer
/// ones were inserted meanwhile. A tenant sees only its own.
pub async fn history(
    pool: &PgPool,
    limit: i64,
    before: Option<i64>,
    scope: Scope<'_>,
) -> sqlx::Result<HistoryPage> {
    // Two statements, not one with `$n is null or tenant = $n`: a generic plan of that could not
    // use the (tenant, seq) index, and a small tenant's page would scan everyone's rows. The
    // cursor is `seq < coalesce(..)`, not `$1 is null or seq < $1`, for the same reason: a generic
    // plan of the latter filters from the newest row down, so a deep page read every newer row.
    let rows: Vec<HistoryRow> =
        match scope {
            Scope::All => sqlx::query_as(
                r#"select seq, id, prompt, generated_text, model_name, created_at from generations
                   where seq < coalesce($1, 9223372036854775807)
                   order by seq desc limit $2"#,
            )
            .bind(before)
            .bind(limit + 1)
            .fetch_all(pool)
            .await?,
            Scope::Tenant(tenant) => sqlx::query_as(
                r#"select seq, id, prompt, generated_text, model_name, created_at from generations
                   where tenant = $3 and seq < coalesce($1, 9223372036854775807)
                   order by tenant, seq desc limit $2"#,
            )
            .bind(before)
            .bind(limit + 1)
            .bind(tenant)
            .fetch_all(pool)
            .await?,
        };
    let rows: Vec<(i64, GenerationRecord)> = rows.into_iter().map(|r| (r.seq, r.record)).collect();
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
pub async fn of_job(pool: &PgPool, job_id: Uuid) -> sqlx::Result<Vec<GenerationRecord>> {
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
    pub prompt_tokens: Option<i32>,
    pub finish_reason: FinishReason,
    pub redacted: bool,
}

/// The newest inferred result of `tenant` for each key, among those younger than `ttl`. Never
/// another tenant's: a cache hit would tell that someone else sent the same prompt.
pub async fn cached(
    pool: &PgPool,
    keys: &[Vec<u8>],
    ttl: Duration,
    tenant: &str,
) -> sqlx::Result<Vec<CachedResult>> {
    sqlx::query_as(
        r#"select distinct on (cache_key) cache_key, generated_text, completion_tokens, finish_reason,
                  redacted, prompt_tokens
           from generations
           where cache_key = any($1) and created_at > now() - make_interval(secs => $2)
             and tenant = $3
           order by cache_key, created_at desc"#,
    )
    .bind(keys)
    .bind(ttl.as_secs_f64())
    .bind(tenant)
    .fetch_all(pool)
    .await
}

/// Stores a finished attempt's results, inside the transaction that records its outcome.
pub(super) async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    claim: &Claim,
    model: &str,
    results: &[NewGeneration],
) -> sqlx::Result<()> {
    if results.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = results.iter().map(|_| Uuid::now_v7()).collect();
    let indexes: Vec<i32> = results.iter().map(|r| r.index).collect();
    let prompts: Vec<&str> = results
        .iter()
        .map(|r| claim.prompts[r.index as usize].as_str())
        .collect();
    let texts: Vec<&str> = results.iter().map(|r| r.text.as_str()).collect();
    let tokens: Vec<i32> = results.iter().map(|r| r.completion_tokens).collect();
    let reasons: Vec<FinishReason> = results.iter().map(|r| r.finish_reason).collect();
    let cache_keys: Vec<Option<&[u8]>> = results.iter().map(|r| r.cache_key.as_deref()).collect();
    let cached: Vec<bool> = results.iter().map(|r| r.cached).collect();
    let redacted: Vec<bool> = results.iter().map(|r| r.redacted).collect();
    let prompt_tokens: Vec<Option<i32>> = results.iter().map(|r| r.prompt_tokens).collect();
    sqlx::query(
        r#"insert into generations
               (id, job_id, prompt_index, prompt, generated_text, completion_tokens, finish_reason,
                model_name, cache_key, cached, redacted, tenant, prompt_tokens)
           select id, $2, idx, prompt, text, tokens, reason, $8, key, hit, filtered,
                  (select tenant from jobs where jobs.id = $2), fed
           from unnest($1::uuid[], $3::int[], $4::text[], $5::text[], $6::int[], $7::text[],
                       $9::bytea[], $10::bool[], $11::bool[], $12::int[])
               as t(id, idx, prompt, text, tokens, reason, key, hit, filtered, fed)
           order by idx"#,
    )
    .bind(ids)
    .bind(claim.id)
    .bind(indexes)
    .bind(prompts)
    .bind(texts)
    .bind(tokens)
    .bind(reasons)
    .bind(model)
    .bind(cache_keys)
    .bind(cached)
    .bind(redacted)
    .bind(prompt_tokens)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Completion tokens stored for these jobs: the benchmarks' throughput figure.
pub async fn completion_tokens_of(pool: &PgPool, job_ids: &[Uuid]) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select coalesce(sum(completion_tokens), 0)::bigint from generations
           where job_id = any($1)"#,
    )
    .bind(job_ids)
    .fetch_one(pool)
    .await
}

/// (job, prompt) pairs with more than one stored result. The unique key on (job_id,
/// prompt_index) keeps this at zero; the fault suite reads it to show that it stays there.
pub async fn stored_twice(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from (select 1 from generations group by job_id, prompt_index
                                 having count(*) > 1) twice"#,
    )
    .fetch_one(pool)
    .await
}

/// Results stored for a prompt index their job does not have.
pub async fn misplaced(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from generations g join jobs j on j.id = g.job_id
           where g.prompt_index < 0 or g.prompt_index >= j.prompt_count"#,
    )
    .fetch_one(pool)
    .await
}

/// Drops the results of jobs that run again from the start (a lost attempt, a manual retry).
pub(super) async fn delete_of_jobs<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    job_ids: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query(r#"delete from generations where job_id = any($1)"#)
        .bind(job_ids)
        .execute(executor)
        .await?;
    Ok(())
}

/// A job's outcome with its results, as OpenAI's answers need them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobOutcome {
    pub id: Uuid,
    pub status: crate::types::JobStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

/// One stored result of [`of_jobs`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobResult {
    pub job_id: Uuid,
    pub prompt_index: i32,
    pub prompt: String,
    pub generated_text: String,
    pub completion_tokens: i32,
    pub prompt_tokens: Option<i32>,
    pub finish_reason: FinishReason,
}

/// The outcomes of `ids` (in no order; unknown ids are absent).
pub async fn outcomes(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<JobOutcome>> {
    sqlx::query_as(r#"select id, status, error_code, error_message from jobs where id = any($1)"#)
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Every stored result of the jobs `ids`, by job and prompt.
pub async fn of_jobs(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Vec<JobResult>> {
    sqlx::query_as(
        r#"select job_id, prompt_index, prompt, generated_text, completion_tokens, prompt_tokens,
                  finish_reason
           from generations where job_id = any($1) order by job_id, prompt_index"#,
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// Tokens generated in all, over every stored result (the benchmark's count of one run's work).
pub async fn completion_tokens_total(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar(r#"select coalesce(sum(completion_tokens), 0)::bigint from generations"#)
        .fetch_one(pool)
        .await
}
