//! `Idempotency-Key` of `POST /batch`: the key, a hash of the request it came with, and the job it
//! created, per tenant (two tenants may use the same key). Kept until the job is removed by
//! retention.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// What an earlier request with the same key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Earlier {
    /// The same request: its job.
    Same(Uuid),
    /// A different request used this key.
    Different,
}

/// Records `key` for `job_id` inside the transaction that inserts the job. When the key is
/// taken, says by what; the caller then rolls the transaction back. A concurrent request with
/// the same key waits on the unique index until the first commits, so it sees the first's job.
pub async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    key: &str,
    request_hash: &[u8],
    job_id: Uuid,
) -> sqlx::Result<Option<Earlier>> {
    let inserted = sqlx::query(
        r#"insert into idempotency_keys (key, request_hash, job_id, tenant) values ($1, $2, $3, $4)
           on conflict (tenant, key) do nothing"#,
    )
    .bind(key)
    .bind(request_hash)
    .bind(job_id)
    .bind(tenant)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let (hash, earlier): (Vec<u8>, Uuid) = sqlx::query_as(
        r#"select request_hash, job_id from idempotency_keys where tenant = $2 and key = $1"#,
    )
    .bind(key)
    .bind(tenant)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Some(if hash == request_hash {
        Earlier::Same(earlier)
    } else {
        Earlier::Different
    }))
}
