//! `genqctl models`: the catalogue of models jobs may ask for, aliases that split traffic between
//! them, and each alias's arms compared (docs/models.md).

use clap::{Args, Subcommand};
use genq_shared::{
    db::{
        self,
        models::{CatalogueError, NewModel},
    },
    routing::{Alias, Arm, short_version},
};

use crate::{Backends, Done, connect_db, jobs::take_out_of_redis, warn};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(subcommand)]
    command: ModelsCommand,
    #[command(flatten)]
    backends: Backends,
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// Register a model (or change its fallback) before any worker serves it: its jobs wait
    /// queued until one does. A worker registers the model it loads by itself.
    Add {
        name: String,
        /// Where its jobs go when they fail on it or wait too long for a worker.
        #[arg(long)]
        fallback: Option<String>,
        /// With --fallback: seconds a job waits with no live worker of the model before it
        /// moves to the fallback (none: only failed jobs move).
        #[arg(long, requires = "fallback", value_parser = clap::value_parser!(i32).range(1..))]
        fallback_after_secs: Option<i32>,
        /// Also make it the default model (the first model registered is).
        #[arg(long)]
        default: bool,
    },
    /// Models and aliases, with live workers and queued jobs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a model. Refused while jobs wait for it, unless --force (which cancels them).
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Make a model the default: the one of requests that name none. With --file, the model a
    /// GGUF file registers as (its `general.name`, else its file name).
    Default {
        #[arg(required_unless_present = "file")]
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        file: Option<std::path::PathBuf>,
    },
    /// Create or change an alias: `--to gpt2-v1=90 --to gpt2-v2=10`. Each user stays on one arm
    /// while the split is unchanged; moving weight moves only the users it must.
    Alias {
        name: String,
        /// MODEL=WEIGHT, weights in percent adding up to 100; the order fixes each arm's share
        /// of users, so keep it when changing weights.
        #[arg(long = "to", required = true)]
        arms: Vec<String>,
        #[arg(long)]
        fallback: Option<String>,
        #[arg(long, requires = "fallback", value_parser = clap::value_parser!(i32).range(1..))]
        fallback_after_secs: Option<i32>,
    },
    /// Remove an alias (its jobs keep the model they were routed to).
    Unalias { name: String },
    /// Compare the models that answered requests for an alias (or a model): jobs, tokens/s, queue
    /// wait, latency p50/p95, failure rate.
    Stats {
        name: String,
        /// Over the last this many seconds.
        #[arg(long, default_value_t = 3600)]
        window_secs: u64,
        #[arg(long)]
        json: bool,
    },
}

/// An arm as `--to` gives it; a malformed one is refused like any other bad alias (exit 1).
fn parse_arm(text: &str) -> Result<Arm, CatalogueError> {
    let refused = |why: String| CatalogueError::Refused(why);
    let (model, weight) = text
        .rsplit_once('=')
        .ok_or_else(|| refused(format!("--to {text}: give MODEL=WEIGHT")))?;
    let weight = weight.parse().map_err(|_| {
        refused(format!(
            "--to {text}: the weight must be a whole number from 0 to 100"
        ))
    })?;
    Ok(Arm {
        model: model.to_owned(),
        weight,
    })
}

pub async fn run(args: ModelsArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.backends.database).await?;
    let outcome = match args.command {
        ModelsCommand::Add {
            name,
            fallback,
            fallback_after_secs,
            default,
        } => {
            let new = NewModel {
                name,
                fallback,
                fallback_after_secs,
                make_default: default,
            };
            db::models::add(&pool, &new).await.map(|inserted| {
                let done = if inserted { "registered" } else { "updated" };
                println!("model {} {done}", new.name);
            })
        }
        ModelsCommand::List { json } => return list(&pool, json).await,
        ModelsCommand::Remove { name, force } => {
            match db::models::remove(&pool, &name, force).await {
                Ok(cancelled) => {
                    // Best effort, as for `queue purge`: PostgreSQL holds the cancellations.
                    if let Err(e) = take_out_of_redis(&pool, &args.backends, &cancelled).await {
                        warn(format_args!(
                            "the jobs are cancelled, but Redis failed ({e:#}): their tasks \
                                 stay in Redis"
                        ));
                    }
                    println!(
                        "model {name} removed ({} queued job(s) cancelled)",
                        cancelled.len()
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        ModelsCommand::Default { name, file } => {
            let name = match (name, file) {
                (Some(name), _) => name,
                (None, Some(file)) => genq_model::ModelFile::read(&file)?.name().to_owned(),
                (None, None) => unreachable!("clap requires one"),
            };
            db::models::set_default(&pool, &name)
                .await
                .map(|()| println!("{name} is the default model"))
        }
        ModelsCommand::Alias {
            name,
            arms,
            fallback,
            fallback_after_secs,
        } => set_alias(&pool, name, &arms, fallback, fallback_after_secs).await,
        ModelsCommand::Unalias { name } => {
            if !db::models::remove_alias(&pool, &name).await? {
                eprintln!("genqctl: there is no alias '{name}'");
                return Ok(Done::Failed);
            }
            println!("alias {name} removed");
            Ok(())
        }
        ModelsCommand::Stats {
            name,
            window_secs,
            json,
        } => return stats(&pool, &name, window_secs, json).await,
    };
    match outcome {
        Ok(()) => Ok(Done::Ok),
        Err(CatalogueError::Refused(why)) => {
            eprintln!("genqctl: {why}");
            Ok(Done::Failed)
        }
        Err(CatalogueError::Database(e)) => Err(e.into()),
    }
}

async fn set_alias(
    pool: &sqlx::PgPool,
    name: String,
    arms: &[String],
    fallback: Option<String>,
    fallback_after_secs: Option<i32>,
) -> Result<(), CatalogueError> {
    let alias = Alias {
        name,
        arms: arms
            .iter()
            .map(|a| parse_arm(a))
            .collect::<Result<_, _>>()?,
        fallback,
        fallback_after_secs,
    };
    db::models::set_alias(pool, &alias).await?;
    let split: Vec<String> = alias
        .arms
        .iter()
        .map(|a| format!("{}={}", a.model, a.weight))
        .collect();
    println!("alias {} -> {}", alias.name, split.join(" "));
    Ok(())
}

async fn list(pool: &sqlx::PgPool, json: bool) -> anyhow::Result<Done> {
    let models = db::models::overview(pool).await?;
    let catalogue = db::models::catalogue(pool).await?;
    if json {
        let aliases: Vec<_> = catalogue
            .aliases
            .iter()
            .map(|a| serde_json::json!({ "name": a.name, "arms": a.arms, "fallback": a.fallback }))
            .collect();
        let document = serde_json::json!({ "models": models, "aliases": aliases });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(Done::Ok);
    }
    println!(
        "{:<24} {:<12} {:>7} {:>7} {:>7}  notes",
        "model", "version", "workers", "queued", "running"
    );
    for m in &models {
        let mut notes = Vec::new();
        if m.is_default {
            notes.push("default".to_owned());
        }
        if m.intake_paused {
            notes.push("intake paused".to_owned());
        }
        if let Some(fallback) = &m.fallback {
            let after = m
                .fallback_after_secs
                .map_or(String::new(), |s| format!(", or after {s} s unserved"));
            notes.push(format!("falls back to {fallback} on failure{after}"));
        }
        println!(
            "{:<24} {:<12} {:>7} {:>7} {:>7}  {}",
            m.name,
            m.version.as_deref().map_or("-", short_version),
            m.live_workers,
            m.queued,
            m.running,
            notes.join("; ")
        );
    }
    for alias in &catalogue.aliases {
        let split: Vec<String> = alias
            .arms
            .iter()
            .map(|a| format!("{}={}", a.model, a.weight))
            .collect();
        println!("alias {:<18} -> {}", alias.name, split.join(" "));
    }
    Ok(Done::Ok)
}

async fn stats(
    pool: &sqlx::PgPool,
    name: &str,
    window_secs: u64,
    json: bool,
) -> anyhow::Result<Done> {
    let catalogue = db::models::catalogue(pool).await?;
    if catalogue.model(name).is_none() && catalogue.alias(name).is_none() {
        eprintln!("genqctl: there is no model or alias '{name}'");
        return Ok(Done::Failed);
    }
    let arms = db::models::arm_stats(pool, name, window_secs as f64).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&arms)?);
        return Ok(Done::Ok);
    }
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |s| format!("{s:.2}"));
    println!(
        "{:<24} {:>7} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8}",
        "model", "jobs", "tokens/s", "wait p50", "lat p50", "lat p95", "failed", "fail %"
    );
    for arm in &arms {
        println!(
            "{:<24} {:>7} {:>9.1} {:>8} {:>9} {:>9} {:>9} {:>7.1}%",
            arm.model,
            arm.jobs,
            arm.tokens_per_sec,
            secs(arm.queue_wait_p50_secs),
            secs(arm.latency_p50_secs),
            secs(arm.latency_p95_secs),
            arm.failed,
            arm.failure_rate * 100.0
        );
    }
    if arms.is_empty() {
        println!("(no job asked for {name} in the last {window_secs} s)");
    }
    Ok(Done::Ok)
}
