//! The worker's row in PostgreSQL's worker registry and the leases of the jobs it holds, both kept
//! fresh by one heartbeat task. `genqctl` lists live workers from the registry; the reconciler
//! takes back running jobs whose lease lapses.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use genq_shared::db;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

const HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_RETRY: Duration = Duration::from_secs(1);

/// The jobs this process is running right now, whose leases the heartbeat renews.
#[derive(Debug, Default)]
pub struct HeldJobs(Mutex<HashSet<Uuid>>);

/// Holds a job's lease until dropped, however the job's run ends.
pub struct Held<'a> {
    jobs: &'a HeldJobs,
    id: Uuid,
}

impl HeldJobs {
    pub fn hold(&self, id: Uuid) -> Held<'_> {
        self.lock().insert(id);
        Held { jobs: self, id }
    }

    fn snapshot(&self) -> Vec<Uuid> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        // The set stays consistent even if a holder panicked: each operation is one insert/remove.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.jobs.lock().remove(&self.id);
    }
}

pub struct Registration {
    name: String,
    heartbeat: JoinHandle<()>,
}

pub async fn register(
    pool: &PgPool,
    name: &str,
    model: &str,
    slots: u32,
    held: Arc<HeldJobs>,
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
        loop {
            let held = held.snapshot();
            let next = match db::workers::heartbeat(&pool, &beat_name, &held).await {
                Ok(()) => HEARTBEAT,
                Err(e) => {
                    // Held jobs keep running. Beat again soon, so that leases aged by a database
                    // outage are renewed before the reconciler judges them.
                    tracing::warn!(error = %e, "worker heartbeat failed");
                    HEARTBEAT_RETRY
                }
            };
            tokio::time::sleep(next).await;
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
