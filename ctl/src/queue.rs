//! `genqctl queue ...`: figures from PostgreSQL, intake control, drain and purge.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use genq_shared::{
    db, queue as dispatch,
    reconcile::{ReconcileConfig, Reconciler},
    types::QueueStats,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{Backends, Done, connect_db, jobs::take_out_of_redis, warn};

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    command: QueueCommand,
    #[command(flatten)]
    backends: Backends,
    /// Only this model's queue (stats, pause, resume, drain, purge); the whole queue without.
    #[arg(long, global = true)]
    model: Option<String>,
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Jobs by status, live workers, and whether intake is paused.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Stop accepting new jobs (the API answers 503); queued jobs still run.
    Pause,
    /// Accept new jobs again.
    Resume,
    /// Pause intake and wait until nothing is queued or running.
    Drain {
        /// Give up (exit 1) after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Cancel every queued job and take it out of Redis.
    Purge {
        /// Required: purging cannot be undone (without it nothing is purged and genqctl exits 2).
        #[arg(long)]
        yes: bool,
    },
    /// One reconciler pass now: re-queue jobs of lost workers, re-dispatch queued jobs Redis
    /// lost, fail queued jobs past their deadline, vacuum Redis, apply retention.
    Reconcile {
        #[command(flatten)]
        config: ReconcileConfig,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(args: QueueArgs) -> anyhow::Result<Done> {
    let pool = connect_db(&args.backends.database).await?;
    let model = args.model.as_deref();
    if let Some(model) = model
        && !db::models::names(&pool).await?.iter().any(|m| m == model)
    {
        eprintln!("genqctl: the model '{model}' is not registered (genqctl models list)");
        return Ok(Done::Failed);
    }
    match args.command {
        QueueCommand::Stats { json } => {
            let stats = db::jobs::stats(&pool, model).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&stats);
            }
        }
        QueueCommand::Pause => {
            set_intake_paused(&pool, model, true).await?;
            println!("intake paused: the API refuses new jobs with 503; queued jobs still run");
        }
        QueueCommand::Resume => {
            set_intake_paused(&pool, model, false).await?;
            println!("intake resumed");
        }
        QueueCommand::Drain { timeout } => {
            return drain(&pool, model, Duration::from_secs(timeout)).await;
        }
        QueueCommand::Reconcile { config, json } => {
            return reconcile(pool, &args.backends, config, json).await;
        }
        QueueCommand::Purge { yes } => {
            if !yes {
                eprintln!("purge cancels every queued job; run again with --yes to do it");
                return Ok(Done::Usage);
            }
            let ids = db::jobs::cancel_all_queued(&pool, "purged by an operator", model).await?;
            // The jobs are cancelled in PostgreSQL, which workers check before running a job:
            // Redis is best effort, as for `jobs cancel`.
            match take_out_of_redis(&pool, &args.backends, &ids).await {
                Ok(removed) => println!(
                    "purged {} queued jobs ({removed} taken out of Redis)",
                    ids.len()
                ),
                Err(e) => {
                    warn(format_args!(
                        "the jobs are cancelled in PostgreSQL, but Redis failed ({e:#}): \
                         their tasks stay in Redis until a worker skips them"
                    ));
                    println!("purged {} queued jobs", ids.len());
                }
            }
        }
    }
    Ok(Done::Ok)
}

fn print_stats(stats: &QueueStats) {
    println!("queued     {}", stats.queued);
    println!("running    {}", stats.running);
    println!("completed  {}", stats.completed);
    println!("failed     {}", stats.failed);
    println!("cancelled  {}", stats.cancelled);
    println!("workers    {} live", stats.live_workers);
    println!(
        "intake     {}",
        if stats.intake_paused {
            "paused"
        } else {
            "open"
        }
    );
}

async fn reconcile(
    pool: sqlx::PgPool,
    backends: &crate::Backends,
    config: ReconcileConfig,
    json: bool,
) -> anyhow::Result<Done> {
    // Lazily: with Redis down its two steps fail and the PostgreSQL steps still run.
    let redis = dispatch::connect_lazy(&backends.queue)?;
    let mut reconciler = Reconciler::new(pool, redis, backends.queue.queue.clone(), config);
    let pass = reconciler.pass().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&pass)?);
    } else if pass.skipped {
        println!("another reconciler pass (an API replica's) is running; this one did nothing");
    } else {
        println!(
            "re-queued {} (lost workers), failed {} (out of attempts), timed out {}, \
             checked {} queued job(s) against Redis{}, re-dispatched {}, \
             made {} due task(s) ready, vacuumed {} Redis task(s), deleted {} old job(s)",
            pass.requeued,
            pass.failed_lost,
            pass.timed_out,
            pass.checked,
            if pass.full_check {
                " (all: first pass, or Redis had lost its data)"
            } else {
                ""
            },
            pass.redispatched,
            pass.promoted,
            pass.vacuumed,
            pass.deleted
        );
    }
    // The other steps ran regardless (see `Reconciler::pass`); the pass above shows what they did.
    for failed in &pass.failed_steps {
        eprintln!("genqctl: step {} failed: {}", failed.step, failed.error);
    }
    Ok(if pass.failed_steps.is_empty() {
        Done::Ok
    } else {
        Done::Failed
    })
}

/// Pauses or resumes the whole intake, or one model's.
async fn set_intake_paused(
    pool: &sqlx::PgPool,
    model: Option<&str>,
    paused: bool,
) -> anyhow::Result<()> {
    match model {
        Some(model) => {
            db::models::set_intake_paused(pool, model, paused).await?;
        }
        None => db::control::set_intake_paused(pool, paused).await?,
    }
    Ok(())
}

async fn drain(
    pool: &sqlx::PgPool,
    model: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Done> {
    set_intake_paused(pool, model, true).await?;
    println!("intake paused; waiting for queued and running jobs to finish");
    let started = Instant::now();
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    // On a terminal a bar of the jobs left at the start; elsewhere (logs) a line a second.
    let mut bar: Option<ProgressBar> = None;
    loop {
        every_second.tick().await;
        let backlog = db::jobs::backlog(pool, model).await?;
        let workers = db::workers::live(pool)
            .await?
            .iter()
            .filter(|w| model.is_none_or(|m| w.model == m))
            .count();
        let left = (backlog.queued + backlog.running) as u64;
        let bar = bar.get_or_insert_with(|| drain_bar(left));
        bar.set_length(bar.length().unwrap_or(0).max(left));
        bar.set_position(bar.length().unwrap_or(0) - left);
        let figures = format!(
            "queued {:>6}  running {:>4}  workers {workers}",
            backlog.queued, backlog.running
        );
        if bar.is_hidden() {
            println!("{figures}");
        } else {
            bar.set_message(figures);
        }
        if left == 0 {
            bar.finish_and_clear();
            println!(
                "drained in {:.1} s; intake stays paused (genqctl queue resume)",
                started.elapsed().as_secs_f64()
            );
            return Ok(Done::Ok);
        }
        if started.elapsed() >= timeout {
            bar.abandon();
            eprintln!(
                "drain timed out after {} s with work left",
                timeout.as_secs()
            );
            return Ok(Done::Failed);
        }
    }
}

/// Jobs finished of those queued or running when the drain began (more if some are re-queued).
fn drain_bar(jobs: u64) -> ProgressBar {
    let bar = ProgressBar::new(jobs).with_style(
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} jobs finished {elapsed}  {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}
