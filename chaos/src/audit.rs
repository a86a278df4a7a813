//! The final count, read from PostgreSQL (the record) and checked against what the clients were
//! told: every accepted task id must have one final status, every completed job exactly one result
//! per prompt, and no result may be stored twice.

use std::collections::{BTreeMap, HashMap};

use genq_shared::types::JobStatus;
use sqlx::PgPool;
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
    /// (job, prompt) pairs stored more than once, and results for a prompt the job does not have.
    pub duplicated: i64,
    pub misplaced: i64,
    /// Accepted ids whose final status as the client read it differs from PostgreSQL's.
    pub disagreements: usize,
    /// Jobs in PostgreSQL that no client was given an id for, and how many of those are unfinished.
    pub unknown_to_clients: usize,
    pub unknown_unfinished: usize,
    /// Jobs claimed more than once (a fault took a claim away); fencing kept one outcome each.
    pub rerun: usize,
}

impl Audit {
    /// Accepted jobs without a final status, or completed without all their results.
    pub fn lost(&self) -> usize {
        self.missing.len() + self.unfinished.len() + self.incomplete.len()
    }

    pub fn passed(&self) -> bool {
        self.lost() == 0
            && self.duplicated == 0
            && self.misplaced == 0
            && self.disagreements == 0
            && self.unknown_unfinished == 0
    }
}

pub async fn run(pool: &PgPool, seen: &Seen) -> anyhow::Result<Audit> {
    let rows: Vec<(Uuid, JobStatus, Option<String>, i32)> =
        sqlx::query_as("select id, status, error_code, attempt from jobs")
            .fetch_all(pool)
            .await?;
    let jobs: HashMap<Uuid, (JobStatus, Option<String>, i32)> = rows
        .into_iter()
        .map(|(id, status, code, attempt)| (id, (status, code, attempt)))
        .collect();

    let mut audit = Audit {
        accepted: seen.accepted.len(),
        ..Audit::default()
    };
    for (id, client_saw) in &seen.accepted {
        let Some((status, code, attempt)) = jobs.get(id) else {
            audit.missing.push(*id);
            continue;
        };
        match status {
            JobStatus::Completed => audit.completed += 1,
            JobStatus::Cancelled => audit.cancelled += 1,
            JobStatus::Failed => {
                let reason = code.clone().unwrap_or_else(|| "unknown".into());
                *audit.failed.entry(reason).or_default() += 1;
            }
            JobStatus::Queued | JobStatus::Running => audit.unfinished.push(*id),
        }
        audit.disagreements += usize::from(*client_saw != Some(*status));
        audit.rerun += usize::from(*attempt > 1);
    }
    for (id, (status, _, _)) in &jobs {
        if !seen.accepted.contains_key(id) {
            audit.unknown_to_clients += 1;
            audit.unknown_unfinished += usize::from(!status.is_final());
        }
    }

    audit.incomplete = sqlx::query_scalar(
        r#"select j.id from jobs j
           left join (select job_id, count(*) as n, count(distinct prompt_index) as distinct_n
                      from generations group by job_id) g on g.job_id = j.id
           where j.status = 'completed'
             and (coalesce(g.n, 0) <> j.prompt_count or coalesce(g.distinct_n, 0) <> j.prompt_count)"#,
    )
    .fetch_all(pool)
    .await?;
    audit.duplicated = sqlx::query_scalar(
        r#"select count(*) from (select 1 from generations group by job_id, prompt_index
                                 having count(*) > 1) twice"#,
    )
    .fetch_one(pool)
    .await?;
    audit.misplaced = sqlx::query_scalar(
        r#"select count(*) from generations g join jobs j on j.id = g.job_id
           where g.prompt_index < 0 or g.prompt_index >= j.prompt_count"#,
    )
    .fetch_one(pool)
    .await?;
    Ok(audit)
}
