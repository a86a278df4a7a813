//! The final count, read from PostgreSQL (the record) and checked against what the clients were
//! told: every accepted task id must have one final status, every completed job exactly one result
//! per prompt, and no result may be stored twice. Beside those, the repeated work the faults
//! caused, from the job attempts: expected under faults, so reported but never a failure.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use genq_shared::{
    db::{
        attempts::{self, RepeatedWork},
        generations,
        jobs::report,
    },
    types::JobStatus,
};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::load::Seen;

#[derive(Debug, Default)]
pub struct Audit {
    pub accepted: usize,
    pub completed: usize,
    pub cancelled: usize,
    /// Failed jobs by error code.
    pub failed: BTreeMap<String, usize>,
    /// Accepted ids PostgreSQL has no row for.
    pub missing: Vec<Uuid>,
    /// Accepted ids whose job never reached a final status.
    pub unfinished: Vec<Uuid>,
    /// Completed jobs without exactly one result for each prompt.
    pub incomplete: Vec<Uuid>,
    /// (job, prompt) pairs stored more than once. The unique key on (job, prompt) keeps this at
    /// zero, so it guards the schema rather than measuring the faults; `repeated` does that.
    pub stored_twice: i64,
    /// Results for a prompt the job does not have.
    pub misplaced: i64,
    /// Completed jobs run by a worker of another model than the one they were routed to.
    pub wrong_model: i64,
    /// Final jobs whose outcome a claim wrote after it had lost the job (fencing failed).
    pub stale_claim_writes: i64,
    /// Accepted ids whose final status as the client read it differs from PostgreSQL's.
    pub disagreements: usize,
    /// Jobs in PostgreSQL that no client was given an id for, and how many of those are unfinished.
    pub unknown_to_clients: usize,
    pub unknown_unfinished: usize,
    /// Jobs claimed more than once, outcomes refused, prompts generated again (all jobs, from
    /// `job_attempts`).
    pub repeated: RepeatedWork,
}

impl Audit {
    /// Accepted jobs without a final status, or completed without all their results.
    pub fn lost(&self) -> usize {
        self.missing.len() + self.unfinished.len() + self.incomplete.len()
    }

    /// Repeated work is left out on purpose: killed workers and lost deliveries make some.
    pub fn passed(&self) -> bool {
        self.lost() == 0
            && self.stored_twice == 0
            && self.misplaced == 0
            && self.wrong_model == 0
            && self.stale_claim_writes == 0
            && self.disagreements == 0
            && self.unknown_unfinished == 0
    }
}

pub async fn run(pool: &PgPool, seen: &Seen) -> anyhow::Result<Audit> {
    let jobs: HashMap<Uuid, report::Standing> = report::standings(pool)
        .await?
        .into_iter()
        .map(|job| (job.id, job))
        .collect();

    let mut audit = Audit {
        accepted: seen.accepted.len(),
        ..Audit::default()
    };
    for (id, client_saw) in &seen.accepted {
        let Some(job) = jobs.get(id) else {
            audit.missing.push(*id);
            continue;
        };
        match job.status {
            JobStatus::Completed => audit.completed += 1,
            JobStatus::Cancelled => audit.cancelled += 1,
            JobStatus::Failed => {
                let reason = job.error_code.clone().unwrap_or_else(|| "unknown".into());
                *audit.failed.entry(reason).or_default() += 1;
            }
            JobStatus::Queued | JobStatus::Running => audit.unfinished.push(*id),
        }
        audit.disagreements += usize::from(*client_saw != Some(job.status));
    }
    for (id, job) in &jobs {
        if !seen.accepted.contains_key(id) {
            audit.unknown_to_clients += 1;
            audit.unknown_unfinished += usize::from(!job.status.is_final());
        }
    }

    audit.incomplete = report::completed_without_every_result(pool).await?;
    audit.stored_twice = generations::stored_twice(pool).await?;
    audit.misplaced = generations::misplaced(pool).await?;
    audit.wrong_model = report::ran_on_another_model(pool).await?;
    audit.stale_claim_writes = report::finished_by_a_stale_claim(pool).await?;
    audit.repeated = attempts::repeated_work(pool).await?;
    Ok(audit)
}

/// PostgreSQL sessions on the suite's database still open once every genq process has stopped,
/// waiting up to `within` for them to close: each one a connection slot held for a client that
/// went away unheard (see `genq_shared::db::SERVER_KEEPALIVE`). Closes `pool` first, so that
/// only one connection of the suite's own remains, the one asking.
pub async fn sessions_left(pool: PgPool, url: &str, within: Duration) -> anyhow::Result<i64> {
    // Every connection of the pool is back in it by now; the bound only guards the report.
    let _ = tokio::time::timeout(Duration::from_secs(10), pool.close()).await;
    let mut asking = PgConnection::connect(url).await?;
    let give_up = Instant::now() + within;
    loop {
        let left: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity
             where datname = current_database() and pid <> pg_backend_pid()
               and backend_type = 'client backend'",
        )
        .fetch_one(&mut asking)
        .await?;
        if left == 0 || Instant::now() >= give_up {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
