//! The lock that lets one reconciler pass run at a time per queue: a transaction-scoped advisory
//! lock, held by a transaction that a task of its own keeps busy. Busy, because PostgreSQL ends a
//! session idle in a transaction after [`crate::db::IDLE_IN_TRANSACTION`], which is what frees
//! the lock of an API replica cut off mid-pass; a live pass, whatever its length, keeps it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::{PgPool, Postgres, Transaction};
use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

use crate::db::IDLE_IN_TRANSACTION;

/// Well inside [`IDLE_IN_TRANSACTION`].
const KEEP_BUSY_EVERY: Duration = Duration::from_secs(2);

/// When the last beat that PostgreSQL answered was sent; `None` once one failed.
type Answered = Arc<Mutex<Option<Instant>>>;

fn answered(answered: &Answered) -> Option<Instant> {
    // One assignment per use: consistent even if a holder panicked.
    *answered.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct ReconcilerLock {
    answered: Answered,
    release: oneshot::Sender<()>,
    holder: JoinHandle<()>,
}

impl ReconcilerLock {
    /// False once the holding session may have ended: a beat failed (PostgreSQL restarted), or
    /// none was answered for long enough that PostgreSQL may have ended it as idle (a silent
    /// link hangs the beat rather than failing it). Another pass may then hold the lock.
    pub fn is_held(&self) -> bool {
        answered(&self.answered)
            .is_some_and(|sent| sent.elapsed() < IDLE_IN_TRANSACTION - KEEP_BUSY_EVERY)
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
    let answered = Arc::new(Mutex::new(Some(Instant::now())));
    let (release, released) = oneshot::channel();
    let holder = tokio::spawn(hold(tx, released, answered.clone()));
    Ok(Some(ReconcilerLock {
        answered,
        release,
        holder,
    }))
}

async fn hold(
    mut tx: Transaction<'static, Postgres>,
    mut released: oneshot::Receiver<()>,
    answered: Answered,
) {
    let mut beats = tokio::time::interval(KEEP_BUSY_EVERY);
    beats.tick().await;
    loop {
        tokio::select! {
            // Sent, or the lock dropped.
            _ = &mut released => break,
            // The statement runs to its end, never dropped half-way (launchbadge/sqlx#4393).
            _ = beats.tick() => {
                let sent = Instant::now();
                if sqlx::query(r#"select 1"#).execute(&mut *tx).await.is_err() {
                    *answered.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return;
                }
                answered.lock().unwrap_or_else(|p| p.into_inner()).replace(sent);
            }
        }
    }
    // Ending it can fail only with the connection, which releases the lock as well.
    let _ = tx.commit().await;
}
