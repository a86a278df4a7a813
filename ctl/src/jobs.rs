//! `genqctl jobs ...` and `genqctl workers`.

use clap::{Args, Subcommand};
use genq_shared::{
    config::DatabaseConfig,
    db::{self, jobs::CancelOutcome},
    queue as dispatch,
    types::JobStatus,
};
use uuid::Uuid;

use crate::{Backends, Done, connect_db, warn};

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(subcommand)]
    command: JobsCommand,
    #[command(flatten)]
    backends: Backends,
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Print a job's status and results as JSON.
    Show { id: Uuid },
    /// Cancel a queued or running job.
    Cancel { id: Uuid },
    /// List jobs, newest first; `--status failed` is the dead list.
    List {
        #[arg(long, value_enum)]
        status: Option<JobStatus>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Put failed jobs back in the queue with fresh attempts: one, or every failed job.
    Retry {
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<Uuid>,
        #[arg(long)]
        all_failed: bool,
    },
    /// Delete finished jobs (and their results) that finished longer ago than this.
    Cleanup {
        #[arg(long, value_name = "SECONDS")]
        older_than: u64,
    },
}

pub async fn run(args: JobsArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.backends.database).await?;
    match args.command {
        JobsCommand::Show { id } => match db::jobs::view(&pool, id, db::Scope::All).await? {
            Some(view) => println!("{}", serde_json::to_string_pretty(&view)?),
            None => {
                eprintln!("no job {id}");
                return Ok(Done::Failed);
            }
        },
        JobsCommand::Cancel { id } => match db::jobs::cancel(&pool, id, db::Scope::All).await? {
            CancelOutcome::Cancelled => {
                // PostgreSQL holds the cancellation, so a worker that still gets the task skips
                // it: taking it out of Redis only saves that worker the look, as the API's cancel.
                if let Err(e) = take_out_of_redis(&pool, &args.backends, &[id]).await {
                    warn(format_args!(
                        "job {id} is cancelled in PostgreSQL, but Redis failed ({e:#}): \
                         the job's task stays in Redis until a worker skips it"
                    ));
                }
                println!("job {id} cancelled");
            }
            CancelOutcome::AlreadyFinal(status) => {
                eprintln!("job {id} is already {status}");
                return Ok(Done::Failed);
            }
            CancelOutcome::NotFound => {
                eprintln!("no job {id}");
                return Ok(Done::Failed);
            }
        },
        JobsCommand::List {
            status,
            limit,
            json,
        } => {
            let jobs = db::jobs::list(&pool, status, limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
                return Ok(Done::Ok);
            }
            println!(
                "{:<36}  {:<9}  {:>7}  {:>7}  error",
                "id", "status", "prompts", "attempt"
            );
            for job in &jobs {
                let error = job.error_code.as_ref().map_or(String::new(), |code| {
                    format!("{code}: {}", job.error_message.as_deref().unwrap_or(""))
                });
                println!(
                    "{:<36}  {:<9}  {:>7}  {:>7}  {error}",
                    job.id, job.status, job.prompt_count, job.attempt
                );
            }
        }
        JobsCommand::Retry { id, all_failed: _ } => {
            let ids = db::jobs::retry_failed(&pool, id).await?;
            if ids.is_empty() {
                eprintln!("no failed job to retry");
                // A named job that is not failed is a failure; --all-failed with none is not.
                return Ok(if id.is_some() { Done::Failed } else { Done::Ok });
            }
            // The jobs are queued in PostgreSQL now; the reconciler dispatches queued jobs that
            // Redis does not hold, so a failed push only delays them.
            let pushed = async {
                let mut redis = dispatch::connect(&args.backends.queue).await?;
                dispatch::redispatch(&pool, &mut redis, &args.backends.queue.queue, &ids).await
            };
            if let Err(e) = pushed.await {
                warn(format_args!(
                    "the jobs are queued in PostgreSQL, but pushing them to Redis failed \
                     ({e:#}): the reconciler dispatches them"
                ));
            }
            println!("{} job(s) queued again", ids.len());
        }
        JobsCommand::Cleanup { older_than } => {
            let older = std::time::Duration::from_secs(older_than);
            let mut deleted = 0;
            loop {
                let batch = db::jobs::delete_finished(&pool, older, 1000).await?;
                deleted += batch.len();
                if batch.len() < 1000 {
                    break;
                }
            }
            println!("{deleted} finished job(s) deleted");
        }
    }
    Ok(Done::Ok)
}

/// Takes jobs' waiting tasks out of Redis (best effort for callers: PostgreSQL already holds the
/// jobs' final status). Connecting counts: Redis unreachable is an error here like any other.
pub async fn take_out_of_redis(
    pool: &sqlx::PgPool,
    backends: &Backends,
    ids: &[Uuid],
) -> anyhow::Result<u64> {
    let mut redis = dispatch::connect(&backends.queue).await?;
    dispatch::remove(pool, &mut redis, &backends.queue.queue, ids).await
}

pub async fn workers(database: &DatabaseConfig, json: bool) -> anyhow::Result<Done> {
    let pool = connect_db(database).await?;
    let live = db::workers::live(&pool).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&live)?);
        return Ok(Done::Ok);
    }
    println!("{:<40} {:<24} {:>5}  last seen", "name", "model", "slots");
    for w in &live {
        let age = (chrono_now() - w.last_seen).num_seconds();
        println!("{:<40} {:<24} {:>5}  {age} s ago", w.name, w.model, w.slots);
    }
    println!("{} live", live.len());
    Ok(Done::Ok)
}

fn chrono_now() -> sqlx::types::chrono::DateTime<sqlx::types::chrono::Utc> {
    sqlx::types::chrono::Utc::now()
}
