//! Stored generations: one row per prompt of a finished job; `/history` reads them newest first.

use sqlx::PgPool;

use crate::types::{GenerationRecord, HistoryPage};

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
