//! Waiting for jobs to finish without polling the database in a loop: workers `NOTIFY` a job's id
//! when it reaches a final status; one listener per process fans the ids out to waiters.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{db, types::JobStatus};

/// A notification can be missed while the listener reconnects, so waiters also re-read the status
/// this often.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct FinalJobs {
    pool: PgPool,
    finished: broadcast::Sender<Uuid>,
}

impl std::fmt::Debug for FinalJobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinalJobs").finish_non_exhaustive()
    }
}

impl FinalJobs {
    /// Starts the process's listener task.
    pub async fn listen(pool: PgPool) -> sqlx::Result<FinalJobs> {
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(db::FINAL_CHANNEL).await?;
        let (finished, _) = broadcast::channel(4096);
        let sender = finished.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(note) => {
                        if let Ok(id) = note.payload().parse::<Uuid>() {
                            // No receivers is fine: nobody is waiting.
                            let _ = sender.send(id);
                        }
                    }
                    // sqlx reconnects on the next recv; waiters re-check meanwhile.
                    Err(e) => {
                        tracing::warn!(error = %e, "job notification listener lost its connection");
                        tokio::time::sleep(RECHECK).await;
                    }
                }
            }
        });
        Ok(FinalJobs { pool, finished })
    }

    /// Waits until the job is final or `timeout` passes. Returns the status then (not final on
    /// timeout), or `None` for an unknown job.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> sqlx::Result<Option<JobStatus>> {
        // Subscribe before reading the status so a notification sent in between is not lost.
        let mut finished = self.finished.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = db::jobs::status(&self.pool, id).await?;
            match status {
                Some(s) if !s.is_final() => {}
                other => return Ok(other),
            }
            let recheck_at = deadline.min(tokio::time::Instant::now() + RECHECK);
            loop {
                tokio::select! {
                    note = finished.recv() => match note {
                        Ok(done) if done == id => break,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                    _ = tokio::time::sleep_until(recheck_at) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return db::jobs::status(&self.pool, id).await;
            }
        }
    }
}
