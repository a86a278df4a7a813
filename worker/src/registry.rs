//! The worker's row in PostgreSQL's worker registry, kept fresh by a heartbeat task, so
//! `genqctl` can list live workers.

use std::time::Duration;

use genq_shared::db;
use sqlx::PgPool;
use tokio::task::JoinHandle;

const HEARTBEAT: Duration = Duration::from_secs(5);

pub struct Registration {
    name: String,
    heartbeat: JoinHandle<()>,
}

pub async fn register(
    pool: &PgPool,
    name: &str,
    model: &str,
    slots: u32,
) -> anyhow::Result<Registration> {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    db::workers::register(
        pool,
        name,
        &host,
        std::process::id() as i32,
        model,
        slots as i32,
    )
    .await?;
    let (pool, beat_name) = (pool.clone(), name.to_owned());
    let heartbeat = tokio::spawn(async move {
        let mut every = tokio::time::interval(HEARTBEAT);
        loop {
            every.tick().await;
            if let Err(e) = db::workers::heartbeat(&pool, &beat_name).await {
                tracing::warn!(error = %e, "worker heartbeat failed");
            }
        }
    });
    Ok(Registration {
        name: name.to_owned(),
        heartbeat,
    })
}

impl Registration {
    pub async fn stop(self, pool: &PgPool) {
        self.heartbeat.abort();
        if let Err(e) = db::workers::mark_stopped(pool, &self.name).await {
            tracing::warn!(error = %e, "could not mark the worker stopped");
        }
    }
}
