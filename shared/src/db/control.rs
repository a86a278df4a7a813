//! Queue-wide switches: intake pause.

use sqlx::PgPool;

pub async fn intake_paused(pool: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(r#"select intake_paused from control"#)
        .fetch_one(pool)
        .await
}

pub async fn set_intake_paused(pool: &PgPool, paused: bool) -> sqlx::Result<()> {
    sqlx::query(r#"update control set intake_paused = $1, changed_at = now()"#)
        .bind(paused)
        .execute(pool)
        .await?;
    Ok(())
}
