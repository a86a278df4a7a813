//! `genqctl jobs ...` and `genqctl workers`.

use clap::{Args, Subcommand};
use genq_shared::{
    config::DatabaseConfig,
    db::{self, jobs::CancelOutcome},
    queue as dispatch,
};
use uuid::Uuid;

use crate::{Backends, Done, connect_db};

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
}

pub async fn run(args: JobsArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.backends.database).await?;
    match args.command {
        JobsCommand::Show { id } => match db::jobs::view(&pool, id).await? {
            Some(view) => println!("{}", serde_json::to_string_pretty(&view)?),
            None => {
                eprintln!("no job {id}");
                return Ok(Done::Failed);
            }
        },
        JobsCommand::Cancel { id } => match db::jobs::cancel(&pool, id).await? {
            CancelOutcome::Cancelled => {
                let (_, mut redis) = dispatch::connect(&args.backends.queue).await?;
                dispatch::remove(&mut redis, &args.backends.queue.queue, &[id]).await?;
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
    }
    Ok(Done::Ok)
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
