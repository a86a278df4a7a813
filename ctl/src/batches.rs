//! `genqctl batches ...`: OpenAI batches (`/v1/batches`) of every tenant. Cancelling only asks:
//! the API replicas' batch runners cancel the jobs and write the files, within a second or so.

use clap::{Args, Subcommand};
use genq_shared::{
    config::DatabaseConfig,
    db::{self, Scope, openai_batches::BatchRow},
};
use serde_json::{Value, json};

use crate::{Done, connect_db};

#[derive(Debug, Args)]
pub struct BatchesArgs {
    #[command(subcommand)]
    command: BatchesCommand,
    #[command(flatten)]
    database: DatabaseConfig,
}

#[derive(Debug, Subcommand)]
enum BatchesCommand {
    /// Batches, newest first.
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// A batch with its request counts, as JSON.
    Show { id: String },
    /// Ask for a batch to be cancelled (its unfinished requests are; finished ones keep their
    /// answers).
    Cancel { id: String },
}

pub async fn run(args: BatchesArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.database).await?;
    match args.command {
        BatchesCommand::List { limit, json } => {
            let rows = db::openai_batches::list(&pool, Scope::All, limit, None).await?;
            let shown: Vec<Value> = rows.into_iter().map(described).collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
                return Ok(Done::Ok);
            }
            println!(
                "{:<39} {:<12} {:<12} {:>7} {:>9} {:>6}  endpoint",
                "id", "tenant", "status", "total", "completed", "failed"
            );
            for batch in &shown {
                let counts = &batch["request_counts"];
                println!(
                    "{:<39} {:<12} {:<12} {:>7} {:>9} {:>6}  {}",
                    text(&batch["id"]),
                    text(&batch["tenant"]),
                    text(&batch["status"]),
                    counts["total"],
                    counts["completed"],
                    counts["failed"],
                    text(&batch["endpoint"]),
                );
            }
        }
        BatchesCommand::Show { id } => match db::openai_batches::get(&pool, &id, Scope::All).await?
        {
            Some(row) => println!("{}", serde_json::to_string_pretty(&described(row))?),
            None => {
                eprintln!("no batch {id}");
                return Ok(Done::Failed);
            }
        },
        BatchesCommand::Cancel { id } => {
            match db::openai_batches::request_cancel(&pool, &id, Scope::All)
                .await?
                .as_deref()
            {
                None => {
                    eprintln!("no batch {id}");
                    return Ok(Done::Failed);
                }
                Some("cancelling") => println!("batch {id} is cancelling"),
                Some(status) => {
                    eprintln!("batch {id} is already {status}");
                    return Ok(Done::Failed);
                }
            }
        }
    }
    Ok(Done::Ok)
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// The batch as `show` prints it; its counts as the API's runner last refreshed them.
fn described(row: BatchRow) -> Value {
    json!({
        "id": row.id,
        "tenant": row.tenant,
        "status": row.status,
        "endpoint": row.endpoint,
        "input_file_id": row.input_file_id,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "errors": row.errors.map(|e| e.0),
        "metadata": row.metadata.map(|m| m.0),
        "request_counts": { "total": row.total, "completed": row.completed, "failed": row.failed },
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "expires_at": row.expires_at,
    })
}
