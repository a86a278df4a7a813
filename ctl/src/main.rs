//! genqctl: the operators' CLI. Queue and job commands talk to PostgreSQL (the record) and Redis
//! directly; `submit` goes through the HTTP API like any client.
//!
//! Only `genqctl migrate` creates or migrates the database; every other command connects to the
//! database as it is and refuses one that is missing or behind this build's migrations. stdout
//! carries only a command's output (with `--json`, only the JSON document); messages, warnings
//! and logs go to stderr. Exit codes are listed in [`EXIT_CODES`] (`genqctl --help`).
//!
//! # Layout
//! - here: the command line, exit codes, and connecting to PostgreSQL with the schema check.
//! - `queue`: stats, pause/resume, drain, purge, reconcile; `jobs`: show, cancel, list, retry,
//!   cleanup; `workers`: live workers.
//! - `keys`: API keys (create, list, revoke, webhook secrets).
//! - `submit`: send prompts to the API, optionally wait for the results.
//! - `models`: the model catalogue (add, list, remove, default, alias, stats).
//! - `model`: synthesize a GPT-2-shaped test model, download a real one or pull it from Hugging
//!   Face; `fetch`: the resumable, checked download they share.

mod batches;
mod fetch;
mod jobs;
mod keys;
mod model;
mod models;
mod queue;
mod submit;

use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand};
use genq_shared::{
    config::{DatabaseConfig, QueueConfig},
    db,
};

/// The exit-code contract, shown at the end of `genqctl --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the operation failed or found nothing: an unknown job, a job already final, a database that
     does not exist or is not migrated (run genqctl migrate), PostgreSQL unreachable, a drain that
     timed out, failed reconciler steps, a refused download (HTTP error, not a GGUF, checksum
     mismatch), a submitted job that did not complete
  2  usage error: bad arguments, or purge without --yes

Redis is best effort for jobs cancel, jobs retry and queue purge: PostgreSQL records the change,
and a Redis failure is a warning on stderr with exit code 0. stdout carries only the command's
output (with --json, only the JSON document); messages, warnings and logs go to stderr.";

#[derive(Debug, Parser)]
#[command(
    name = "genqctl",
    version,
    about = "Operate a genq deployment",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing and apply migrations: the only command that does either.
    Migrate {
        #[command(flatten)]
        database: DatabaseConfig,
    },
    /// Queue figures and intake control.
    Queue(queue::QueueArgs),
    /// Inspect and cancel jobs.
    Jobs(jobs::JobsArgs),
    /// OpenAI batches (/v1/batches): list, show, cancel.
    Batches(batches::BatchesArgs),
    /// List live workers (heartbeat within the last 15 s).
    Workers {
        #[command(flatten)]
        database: DatabaseConfig,
        #[arg(long)]
        json: bool,
    },
    /// API keys: create (printed once), list, revoke.
    Keys(keys::KeysArgs),
    /// Submit prompts through the HTTP API (GENQ_API_URL; the key from GENQ_API_KEY).
    Submit(submit::SubmitArgs),
    /// Make or fetch GGUF models.
    Model(model::ModelArgs),
    /// The model catalogue: models, the default, aliases with traffic splits, and their figures.
    Models(models::ModelsArgs),
}

/// How a command that ran to its end asks the process to exit (see [`EXIT_CODES`]). A command
/// that returns an error exits 1, like [`Done::Failed`].
pub enum Done {
    /// Exit 0.
    Ok,
    /// Exit 1: the operation failed or found nothing; the command has said why on stderr.
    Failed,
    /// Exit 2: a usage error clap cannot see; the command has said why on stderr.
    Usage,
}

#[tokio::main]
async fn main() -> ExitCode {
    // clap exits by itself: 2 on bad arguments, 0 after --help and --version.
    let cli = Cli::parse();
    genq_shared::telemetry::init();
    match run(cli.command).await {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Failed) => ExitCode::from(1),
        Ok(Done::Usage) => ExitCode::from(2),
        Err(e) => {
            eprintln!("genqctl: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<Done> {
    match command {
        Command::Migrate { database } => {
            // The one command that creates and migrates the database.
            let pool = db::connect(&database.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("database {} is migrated", database.database_url);
            Ok(Done::Ok)
        }
        Command::Queue(args) => queue::run(args).await,
        Command::Jobs(args) => jobs::run(args).await,
        Command::Batches(args) => batches::run(args).await,
        Command::Workers { database, json } => jobs::workers(&database, json).await,
        Command::Keys(args) => keys::run(args).await,
        Command::Submit(args) => submit::run(args).await,
        Command::Model(args) => model::run(args).await,
        Command::Models(args) => models::run(args).await,
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

/// Connects to the database as it is: never creates nor migrates it (that is `genqctl migrate`'s
/// job, run when an operator chooses). Fails when the database does not exist or lacks
/// migrations this build needs; warns and carries on when a newer build migrated it further.
pub async fn connect_db(database: &DatabaseConfig) -> anyhow::Result<sqlx::PgPool> {
    let url = &database.database_url;
    let Some(pool) = db::connect_existing(url, 2).await? else {
        bail!("the database at {url} does not exist: run genqctl migrate");
    };
    let schema = db::schema_status(&pool).await?;
    if schema.is_behind() {
        bail!(
            "the database at {url} is not migrated ({} of {} migrations applied): \
             run genqctl migrate",
            schema.applied,
            schema.known
        );
    }
    if !schema.unknown.is_empty() {
        warn(format_args!(
            "the database at {url} has {} migration(s) this genqctl does not know (versions {:?}): \
             it was migrated by a newer genq; carrying on",
            schema.unknown.len(),
            schema.unknown
        ));
    }
    Ok(pool)
}

/// A warning on stderr: the command goes on and its exit code is unchanged.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("genqctl: warning: {message}");
}
