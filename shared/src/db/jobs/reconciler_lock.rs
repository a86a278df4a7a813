//! The lock that lets one reconciler pass run at a time per queue: a transaction-scoped advisory
//! lock, held by a transaction that a task of its own keeps busy. Busy, because PostgreSQL ends a
//! session idle in a transaction after [`crate::db::IDLE_IN_TRANSACTION`], which is what frees
//! the lock of an API replica cut off mid-pass; a live pass, whatever its length, keeps it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use sqlx::{PgPool, Postgres, Transaction};
use tokio::{sync::oneshot, task::JoinHandle};

/// Well inside [`crate::db::IDLE_IN_TRANSACTION`].
const KEEP_BUSY_EVERY: Duration = Duration::from_secs(2);

pub struct ReconcilerLock {
    lost: Arc<AtomicBool>,
    release: oneshot::Sender<()>,
    holder: JoinHandle<()>,
}

impl ReconcilerLock {
    /// False once the holding session has ended (PostgreSQL restarted, or the link was down
    /// past the idle timeout): another pass may then hold the lock.
    pub fn is_held(&self) -> bool {
        !self.lost.load(Ordering::Relaxed)
    }

    /// Ends the holding transaction, and with it the lock.
    pub async fn release(self) {
        let _ = self.release.send(());
        let _ = self.holder.await;
    }
}

/// Takes the queue's reconciler lock if no other pass holds it. Dropped unreleased, it is
/// released all the same.
pub async fn try_reconciler_lock(
    pool: &PgPool,
    queue: &str,
) -> sqlx::Result<Option<ReconcilerLock>> {
    let mut tx = pool.begin().await?;
    let taken: bool =
        sqlx::query_scalar(r#"select pg_try_advisory_xact_lock(hashtextextended($1, 0))"#)
            .bind(format!("genq reconciler {queue}"))
            .fetch_one(&mut *tx)
            .await?;
    if !taken {
        tx.rollback().await?;
        return Ok(None);
    }
    let lost = Arc::new(AtomicBool::new(false));
    let (release, released) = oneshot::channel();
    let holder = tokio::spawn(hold(tx, released, lost.clone()));
    Ok(Some(ReconcilerLock {
        lost,
        release,
        holder,
    }))
}

async fn hold(
    mut tx: Transaction<'static, Postgres>,
    mut released: oneshot::Receiver<()>,
    lost: Arc<AtomicBool>,
) {
    let mut beats = tokio::time::interval(KEEP_BUSY_EVERY);
    beats.tick().await;
    loop {
        tokio::select! {
            // Sent, or the lock dropped.
            _ = &mut released => break,
            // The statement runs to its end, never dropped half-way (launchbadge/sqlx#4393).
            _ = beats.tick() => {
                if sqlx::query(r#"select 1"#).execute(&mut *tx).await.is_err() {
                    lost.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    // Ending it can fail only with the connection, which releases the lock as well.
    let _ = tx.commit().await;
}
