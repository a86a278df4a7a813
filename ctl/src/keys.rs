//! `genqctl keys ...`: API keys. A key is printed once, when it is made; PostgreSQL keeps only its
//! hash.

use clap::{Args, Subcommand};
use genq_shared::{
    config::DatabaseConfig,
    db::{
        keys::{self, CreateError, KeyRecord, NewKey},
        webhooks,
    },
    webhook_signing,
};

use crate::{Done, connect_db};

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    database: DatabaseConfig,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a key and print it, and only it, on stdout: it cannot be shown again.
    Create {
        /// Unique among live keys.
        #[arg(long)]
        name: String,
        /// The tenant whose jobs the key submits and sees (default: the key's name). Give a
        /// rotated key its predecessor's tenant to keep its history.
        #[arg(long)]
        tenant: Option<String>,
        /// May pause and resume intake and read or cancel every tenant's jobs.
        #[arg(long)]
        admin: bool,
        /// Requests per minute, shared by every API replica (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        rate_per_min: Option<i32>,
        /// Jobs per minute over every submission route, a bulk request counting each of its
        /// jobs; shared by every API replica (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        jobs_per_min: Option<i32>,
        /// Jobs this key may have queued or running at once (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        max_queued: Option<i32>,
        /// Tokens a day (UTC), charged prompts x max_tokens at submission (default: unlimited).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        tokens_per_day: Option<i64>,
    },
    /// List keys (never their secrets), revoked ones too.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke the live key with this name, or the key with this id; it is refused at once.
    Revoke { name_or_id: String },
    /// Give the live key with this name a webhook signing secret of its own, printed (and only it)
    /// on stdout; its jobs' webhooks are signed with it instead of GENQ_WEBHOOK_SECRET. Run again
    /// to rotate it.
    WebhookSecret {
        name: String,
        /// Remove the key's secret instead: GENQ_WEBHOOK_SECRET signs its webhooks again.
        #[arg(long)]
        remove: bool,
    },
}

pub async fn run(args: KeysArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.database).await?;
    match args.command {
        KeysCommand::Create {
            name,
            tenant,
            admin,
            rate_per_min,
            jobs_per_min,
            max_queued,
            tokens_per_day,
        } => {
            if name.trim().is_empty() || tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
                eprintln!("genqctl: --name and --tenant must not be empty");
                return Ok(Done::Usage);
            }
            let new = NewKey {
                name,
                tenant,
                admin,
                rate_per_min,
                jobs_per_min,
                max_queued,
                tokens_per_day,
            };
            match keys::create(&pool, &new).await {
                Ok((record, key)) => {
                    println!("{key}");
                    eprintln!(
                        "key {:?} ({}) of tenant {:?} created; store it now, it cannot be shown again",
                        record.name, record.prefix, record.tenant
                    );
                }
                Err(e @ CreateError::NameTaken(_)) => {
                    eprintln!("genqctl: {e}");
                    return Ok(Done::Failed);
                }
                Err(CreateError::Database(e)) => return Err(e.into()),
            }
        }
        KeysCommand::List { json } => {
            let keys = keys::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                print_table(&keys);
            }
        }
        KeysCommand::WebhookSecret { name, remove } => {
            let secret = (!remove).then(webhook_signing::generate_secret);
            if !webhooks::set_key_secret(&pool, &name, secret.as_deref()).await? {
                eprintln!("no live key named {name:?}");
                return Ok(Done::Failed);
            }
            match secret {
                Some(secret) => println!("{secret}"),
                None => eprintln!("key {name:?} has no webhook secret of its own now"),
            }
        }
        KeysCommand::Revoke { name_or_id } => match keys::revoke(&pool, &name_or_id).await? {
            Some(record) => println!("key {:?} ({}) revoked", record.name, record.id),
            None => {
                eprintln!("no live key named or with id {name_or_id:?}");
                return Ok(Done::Failed);
            }
        },
    }
    Ok(Done::Ok)
}

fn print_table(keys: &[KeyRecord]) {
    let limit = |v: Option<i64>| v.map_or("-".to_owned(), |n| n.to_string());
    println!(
        "{:<20} {:<16} {:<14} {:<5} {:>8} {:>8} {:>8} {:>12} {:<8} ID",
        "NAME",
        "TENANT",
        "PREFIX",
        "ADMIN",
        "RATE/MIN",
        "JOBS/MIN",
        "QUEUED",
        "TOKENS/DAY",
        "STATE"
    );
    for k in keys {
        println!(
            "{:<20} {:<16} {:<14} {:<5} {:>8} {:>8} {:>8} {:>12} {:<8} {}",
            k.name,
            k.tenant,
            k.prefix,
            if k.admin { "yes" } else { "no" },
            limit(k.rate_per_min.map(i64::from)),
            limit(k.jobs_per_min.map(i64::from)),
            limit(k.max_queued.map(i64::from)),
            limit(k.tokens_per_day),
            if k.revoked_at.is_some() {
                "revoked"
            } else {
                "live"
            },
            k.id
        );
    }
}
