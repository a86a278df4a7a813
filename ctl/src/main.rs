//! genqctl: the operators' CLI. Queue and job commands talk to PostgreSQL (the record) and Redis
//! directly; `submit` goes through the HTTP API like any client.
//!
//! # Layout
//! - `queue`: stats, pause/resume, drain, purge; `jobs`: show, cancel; `workers`: live workers.
//! - `submit`: send prompts to the API, optionally wait for the results.
//! - `model`: synthesize a GPT-2-shaped test model or download a real one.

mod jobs;
mod model;
mod queue;
mod submit;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use genq_shared::{
    config::{DatabaseConfig, QueueConfig},
    db,
};

#[derive(Debug, Parser)]
#[command(name = "genqctl", version, about = "Operate a genq deployment")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing and apply migrations.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Queue figures and intake control.
    Queue(queue::QueueArgs),
    /// Inspect and cancel jobs.
    Jobs(jobs::JobsArgs),
    /// List live workers (heartbeat within the last 15 s).
    Workers {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        json: bool,
    },
    /// Submit prompts through the HTTP API.
    Submit(submit::SubmitArgs),
    /// Make or fetch GGUF models.
    Model(model::ModelArgs),
}

/// What a command asks the process to exit with, beyond plain success.
pub enum Done {
    Ok,
    Failed,
}

#[tokio::main]
async fn main() -> ExitCode {
    genq_shared::telemetry::init();
    match run(Cli::parse().command).await {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Failed) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("genqctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<Done> {
    match command {
        Command::Migrate { database } => {
            let pool = db::connect(&database.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("database {} is migrated", database.database_url);
            Ok(Done::Ok)
        }
        Command::Queue(args) => queue::run(args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Workers { database, json } => jobs::workers(&database, json).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Model(args) => model::run(args).await,
    }
}

/// PostgreSQL and Redis settings for commands that need both.
#[derive(Debug, clap::Args)]
pub struct Backends {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
}

pub async fn connect_db(database: &DatabaseConfig) -> anyhow::Result<sqlx::PgPool> {
    let pool = db::connect(&database.database_url, 2).await?;
    db::migrate(&pool).await?;
    Ok(pool)
}
