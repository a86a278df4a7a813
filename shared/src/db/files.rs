//! Files of OpenAI's Files API (`/v1/files`): batch input uploaded by clients and the output and
//! error files of batches. Their bytes are kept in chunks ([`CHUNK_BYTES`]) so that no step holds
//! a whole file in memory, and so that every API replica can serve any file.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Scope;

/// Bytes per stored chunk: large enough that a 200 MB file is 200 rows, small enough to hold.
pub const CHUNK_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub id: String,
    pub tenant: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub lines: i32,
    pub created_at: DateTime<Utc>,
}

/// A new file id, in OpenAI's form (`file-` and 32 hex digits), ordered by creation.
pub fn new_id() -> String {
    format!("file-{}", Uuid::now_v7().simple())
}

/// Records a file's row; its chunks follow with [`insert_chunk`] and its purpose and size with
/// [`finish`], all in the caller's transaction, so that a file is either whole or absent.
pub async fn insert(
    conn: &mut PgConnection,
    id: &str,
    tenant: &str,
    api_key_id: Option<Uuid>,
    purpose: &str,
    filename: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        r#"insert into files (id, tenant, api_key_id, purpose, filename, bytes, lines)
           values ($1, $2, $3, $4, $5, 0, 0)"#,
    )
    .bind(id)
    .bind(tenant)
    .bind(api_key_id)
    .bind(purpose)
    .bind(filename)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_chunk(
    conn: &mut PgConnection,
    id: &str,
    seq: i32,
    data: &[u8],
) -> sqlx::Result<()> {
    sqlx::query(r#"insert into file_chunks (file_id, seq, data) values ($1, $2, $3)"#)
        .bind(id)
        .bind(seq)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn finish(
    conn: &mut PgConnection,
    id: &str,
    purpose: &str,
    bytes: i64,
    lines: i32,
) -> sqlx::Result<()> {
    sqlx::query(r#"update files set purpose = $2, bytes = $3, lines = $4 where id = $1"#)
        .bind(id)
        .bind(purpose)
        .bind(bytes)
        .bind(lines)
        .execute(conn)
        .await?;
    Ok(())
}

/// The file, if `scope` may see it (another tenant's file is as absent as an unknown one).
pub async fn get(pool: &PgPool, id: &str, scope: Scope<'_>) -> sqlx::Result<Option<FileRow>> {
    sqlx::query_as(
        r#"select id, tenant, purpose, filename, bytes, lines, created_at from files
           where id = $1 and ($2::text is null or tenant = $2)"#,
    )
    .bind(id)
    .bind(scope.tenant())
    .fetch_optional(pool)
    .await
}

/// Files `scope` may see, newest first (or oldest first), after the file `after` in that order.
pub async fn list(
    pool: &PgPool,
    scope: Scope<'_>,
    purpose: Option<&str>,
    limit: i64,
    after: Option<&str>,
    newest_first: bool,
) -> sqlx::Result<Vec<FileRow>> {
    // Ids are time-ordered (UUIDv7), so they order files as their creation does.
    let sql = if newest_first {
        r#"select id, tenant, purpose, filename, bytes, lines, created_at from files
           where ($1::text is null or tenant = $1) and ($2::text is null or purpose = $2)
             and ($4::text is null or id < $4)
           order by id desc limit $3"#
    } else {
        r#"select id, tenant, purpose, filename, bytes, lines, created_at from files
           where ($1::text is null or tenant = $1) and ($2::text is null or purpose = $2)
             and ($4::text is null or id > $4)
           order by id limit $3"#
    };
    sqlx::query_as(sql)
        .bind(scope.tenant())
        .bind(purpose)
        .bind(limit)
        .bind(after)
        .fetch_all(pool)
        .await
}

/// Deletes the file and its bytes; false if `scope` sees no such file.
pub async fn delete(pool: &PgPool, id: &str, scope: Scope<'_>) -> sqlx::Result<bool> {
    let deleted =
        sqlx::query(r#"delete from files where id = $1 and ($2::text is null or tenant = $2)"#)
            .bind(id)
            .bind(scope.tenant())
            .execute(pool)
            .await?
            .rows_affected();
    Ok(deleted == 1)
}

/// Deletes a file being written in `conn`'s transaction.
pub async fn discard(conn: &mut PgConnection, id: &str) -> sqlx::Result<()> {
    sqlx::query(r#"delete from files where id = $1"#)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The file's chunk `seq` (from 0), or `None` past its end.
pub async fn chunk(pool: &PgPool, id: &str, seq: i32) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar(r#"select data from file_chunks where file_id = $1 and seq = $2"#)
        .bind(id)
        .bind(seq)
        .fetch_optional(pool)
        .await
}
