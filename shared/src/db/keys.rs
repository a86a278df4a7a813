//! API keys: their format, how they are stored (only a SHA-256 hash and a public prefix), checking
//! a presented key in constant time, and the per-key quotas' bookkeeping.

use chrono::{DateTime, Utc};
use rand::TryRngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Every key starts with this, so a leaked one is recognisable (secret scanners match on it).
pub const KEY_PREFIX: &str = "genq_";
/// Hex characters after `genq_` stored in clear to find a key's row and tell keys apart.
const LOOKUP_CHARS: usize = 8;
/// The tenant of rows made before keys existed and of every request with `GENQ_AUTH=off`.
pub const LOCAL_TENANT: &str = "local";

/// A key as stored, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct KeyRecord {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    /// The key's first characters, e.g. `genq_1a2b3c4d`.
    pub prefix: String,
    pub admin: bool,
    pub rate_per_min: Option<i32>,
    /// Jobs a minute, counted over every submission route (a bulk request counts its jobs).
    pub jobs_per_min: Option<i32>,
    pub max_queued: Option<i32>,
    pub tokens_per_day: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What `genqctl keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    /// Defaults to the key's name.
    pub tenant: Option<String>,
    pub admin: bool,
    pub rate_per_min: Option<i32>,
    pub jobs_per_min: Option<i32>,
    pub max_queued: Option<i32>,
    pub tokens_per_day: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a live key named {0:?} already exists; revoke it first or choose another name")]
    NameTaken(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// `genq_` and 64 hex characters: 256 random bits from the operating system's generator.
fn generate() -> String {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut secret)
        .expect("the operating system's random generator failed");
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX}{hex}")
}

/// What is stored of a key: its SHA-256.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The stored prefix of a well-formed key; `None` for anything that cannot be a key.
fn lookup_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    (rest.len() == 64 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| &key[..KEY_PREFIX.len() + LOOKUP_CHARS])
}

/// Records a new key and returns it with its secret, which is not stored and cannot be shown
/// again.
pub async fn create(pool: &PgPool, new: &NewKey) -> Result<(KeyRecord, String), CreateError> {
    let key = generate();
    let prefix = lookup_prefix(&key).expect("a generated key is well formed");
    let record = sqlx::query_as::<_, KeyRecord>(
        r#"insert into api_keys (id, name, tenant, prefix, hash, admin, rate_per_min, max_queued,
                                 tokens_per_day, jobs_per_min)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           returning id, name, tenant, prefix, admin, rate_per_min, jobs_per_min, max_queued,
                     tokens_per_day, created_at, revoked_at"#,
    )
    .bind(Uuid::now_v7())
    .bind(&new.name)
    .bind(new.tenant.as_deref().unwrap_or(&new.name))
    .bind(prefix)
    .bind(hash(&key).as_slice())
    .bind(new.admin)
    .bind(new.rate_per_min)
    .bind(new.max_queued)
    .bind(new.tokens_per_day)
    .bind(new.jobs_per_min)
    .fetch_one(pool)
    .await
    .map_err(
        |e| match e.as_database_error().and_then(|d| d.constraint()) {
            Some("api_keys_live_name") => CreateError::NameTaken(new.name.clone()),
            _ => CreateError::Database(e),
        },
    )?;
    Ok((record, key))
}

/// Every key, revoked ones included, oldest first.
pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<KeyRecord>> {
    sqlx::query_as(
        r#"select id, name, tenant, prefix, admin, rate_per_min, jobs_per_min, max_queued,
                     tokens_per_day, created_at, revoked_at
           from api_keys order by created_at, id"#,
    )
    .fetch_all(pool)
    .await
}

/// The key with this id, revoked or not.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<KeyRecord>> {
    sqlx::query_as(
        r#"select id, name, tenant, prefix, admin, rate_per_min, jobs_per_min, max_queued,
                  tokens_per_day, created_at, revoked_at
           from api_keys where id = $1"#,
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Revokes the live key with this name, or the key with this id. `None` when there is none to
/// revoke (unknown, or already revoked).
pub async fn revoke(pool: &PgPool, name_or_id: &str) -> sqlx::Result<Option<KeyRecord>> {
    let id = name_or_id.parse::<Uuid>().ok();
    sqlx::query_as(
        r#"update api_keys set revoked_at = now()
           where revoked_at is null and (name = $1 or id = $2)
           returning id, name, tenant, prefix, admin, rate_per_min, jobs_per_min, max_queued,
                     tokens_per_day, created_at, revoked_at"#,
    )
    .bind(name_or_id)
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Whether the key with this id is still live (not revoked, not deleted).
pub async fn is_live(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let live: Option<bool> =
        sqlx::query_scalar(r#"select revoked_at is null from api_keys where id = $1"#)
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(live.unwrap_or(false))
}

/// The live key `presented` is, if any. The hashes are compared in constant time, so timing
/// tells nothing about how much of a guess was right.
pub async fn authenticate(pool: &PgPool, presented: &str) -> sqlx::Result<Option<KeyRecord>> {
    let Some(prefix) = lookup_prefix(presented) else {
        return Ok(None);
    };
    let candidates: Vec<(Vec<u8>, KeyRecord)> = sqlx::query_as::<_, KeyRow>(
        r#"select hash, id, name, tenant, prefix, admin, rate_per_min, jobs_per_min, max_queued,
                     tokens_per_day, created_at, revoked_at
           from api_keys where prefix = $1 and revoked_at is null"#,
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| (row.hash, row.record))
    .collect();
    let presented = hash(presented);
    Ok(candidates
        .into_iter()
        .find(|(stored, _)| bool::from(stored.as_slice().ct_eq(presented.as_slice())))
        .map(|(_, record)| record))
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    hash: Vec<u8>,
    #[sqlx(flatten)]
    record: KeyRecord,
}

/// Serialises one key's quota checks: concurrent submissions with the same key wait here, so two
/// of them cannot both take the last free place. `no key update`, not `update`: each submission's
/// job insert already holds the key share lock its foreign key takes on this row, which `for
/// update` would conflict with (a deadlock between two submissions).
pub async fn lock_for_quota(tx: &mut Transaction<'_, Postgres>, key_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(r#"select 1 from api_keys where id = $1 for no key update"#)
        .bind(key_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The key's queued and running jobs, counted up to `cap` (enough to compare with a quota
/// without counting a whole backlog).
pub async fn unfinished_jobs(
    tx: &mut Transaction<'_, Postgres>,
    key_id: Uuid,
    cap: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select count(*) from (
               select 1 from jobs where api_key_id = $1 and status in ('queued', 'running')
               limit $2) unfinished"#,
    )
    .bind(key_id)
    .bind(cap)
    .fetch_one(&mut **tx)
    .await
}

/// Adds `tokens` to the key's use today (UTC) unless that would pass `limit`; says whether it did.
pub async fn charge_tokens(
    tx: &mut Transaction<'_, Postgres>,
    key_id: Uuid,
    tokens: i64,
    limit: i64,
) -> sqlx::Result<bool> {
    let charged: Option<i64> = sqlx::query_scalar(
        r#"insert into api_key_usage as u (key_id, day, tokens)
           select $1, (now() at time zone 'utc')::date, $2 where $2 <= $3
           on conflict (key_id, day) do update set tokens = u.tokens + excluded.tokens
               where u.tokens + excluded.tokens <= $3
           returning tokens"#,
    )
    .bind(key_id)
    .bind(tokens)
    .bind(limit)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(charged.is_some())
}

/// Tokens charged to the key today (UTC).
pub async fn tokens_today(pool: &PgPool, key_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        r#"select coalesce(sum(tokens), 0)::bigint from api_key_usage
           where key_id = $1 and day = (now() at time zone 'utc')::date"#,
    )
    .bind(key_id)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert_eq!(lookup_prefix(&a), Some(&a[..13]));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        for bad in [
            "",
            "genq_",
            "genq_xyz",
            &format!("genq_{}", "g".repeat(64)),
            "sk-abc",
        ] {
            assert_eq!(lookup_prefix(bad), None, "{bad:?}");
        }
    }
}
