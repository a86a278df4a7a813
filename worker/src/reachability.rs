//! Whether this worker can reach PostgreSQL. Cut off from it by a partition (packets dropped, so
//! connections neither answer nor close), a claim waits until the link heals, minutes perhaps,
//! while Redis counts its job as delivered and no other worker may take it. So a claim that does
//! not settle within [`CLAIM_PATIENCE`], or fails to reach PostgreSQL, hands its task back, and
//! the worker stops taking jobs until PostgreSQL answers again.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

/// A claim is one short transaction; this is past any healthy one, queueing for a pooled
/// connection included.
pub const CLAIM_PATIENCE: Duration = Duration::from_secs(5);
// A claim waiting on a row another session holds locked gives up before this patience does (a
// locked row says nothing about the link), even after two waits: the row's lock, then its holder.
const _: () =
    assert!(2 * genq_shared::db::jobs::CLAIM_LOCK_WAIT.as_millis() < CLAIM_PATIENCE.as_millis());
/// How often, while cut off, PostgreSQL is asked whether it answers again, and how long an
/// answer may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_PATIENCE: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Postgres {
    unreachable: watch::Sender<bool>,
}

impl Default for Postgres {
    fn default() -> Self {
        Self {
            unreachable: watch::Sender::new(false),
        }
    }
}

impl Postgres {
    pub fn mark_unreachable(&self, why: &str) {
        let newly = self
            .unreachable
            .send_if_modified(|down| !std::mem::replace(down, true));
        if newly {
            genq_shared::metrics::postgres_error();
            tracing::warn!(
                why,
                "PostgreSQL unreachable: taking no jobs until it answers"
            );
        }
    }

    pub fn is_unreachable(&self) -> bool {
        *self.unreachable.borrow()
    }

    /// Resolves once PostgreSQL is marked unreachable (at once if it is).
    pub async fn lost(&self) {
        let mut down = self.unreachable.subscribe();
        // Err only if the sender were dropped, and `self` holds it.
        let _ = down.wait_for(|down| *down).await;
    }

    /// Probes until PostgreSQL answers, then marks it reachable. A probe is one statement outside
    /// any transaction, so one given up on leaves no connection inside a transaction behind.
    pub async fn until_reachable(&self, pool: &PgPool) {
        loop {
            let probe = tokio::time::timeout(PROBE_PATIENCE, genq_shared::db::ping(pool));
            if matches!(probe.await, Ok(Ok(()))) {
                self.unreachable.send_replace(false);
                tracing::info!("PostgreSQL answers again: taking jobs");
                return;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }
}
