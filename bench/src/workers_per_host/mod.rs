//! Several workers on one host: the API and N `genq-worker` processes with their default settings
//! (each decodes on every core), for N = 1, 2, 3, and as a baseline 3 with the host-wide decode
//! lock turned off (`GENQ_DECODE_LOCK=off`), the state before workers took turns. Configurations
//! are interleaved, one repetition of each in turn, because this machine's speed drifts over
//! minutes; every run gets a freshly recreated database and fresh seeds, so neither the result
//! cache nor a previous run's state is measured.
//!
//! The workload is the tiny synthesized model, 60 jobs x 2 prompts x 64 tokens posted at once and
//! polled as a client would (`client`). The table gives each configuration's tokens/s per run,
//! their median and spread, and the median's ratio to one worker's; the target is 3 workers at
//! 0.8x one worker or better, printed as a figure rather than checked as a test.

mod client;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use genq_harness::{Cluster, Config, Database, fresh_queue};
use genq_model::synth;
use genq_shared::db::jobs::report;

use crate::{Services, measure::median};

const JOBS: usize = 60;
const PROMPTS_PER_JOB: usize = 2;
const MAX_TOKENS: u32 = 64;
/// The target: this many workers reach `TARGET_RATIO` x one worker's tokens/s.
const TARGET_WORKERS: usize = 3;
const TARGET_RATIO: f64 = 0.8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model; the tiny synthesized one is written there if the file does not exist.
    #[arg(long, default_value = "models/gpt2-tiny-synthetic.gguf")]
    model: PathBuf,
    /// Worker counts to compare; ratios are to the count 1.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    workers: Vec<usize>,
    /// Repetitions of every configuration, interleaved (1, 2, 3, baseline, 1, 2, 3, baseline...).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Leave out the baseline: 3 workers with `GENQ_DECODE_LOCK=off`.
    #[arg(long)]
    no_baseline: bool,
    #[command(flatten)]
    services: Services,
    /// Where the processes' logs go, one directory per configuration (the last run's).
    #[arg(long, default_value = ".genq/workers-per-host")]
    logs: PathBuf,
}

/// One configuration: how many workers, and whether the decode lock is turned off.
#[derive(Debug, Clone, Copy)]
struct Setup {
    workers: usize,
    lock_off: bool,
}

impl Setup {
    fn label(self) -> String {
        if self.lock_off {
            format!("{}, GENQ_DECODE_LOCK=off (before the fix)", self.workers)
        } else {
            self.workers.to_string()
        }
    }

    fn slug(self) -> String {
        let lock = if self.lock_off { "-lock-off" } else { "" };
        format!("{}-workers{lock}", self.workers)
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("$ {}", crate::command_line());
    if !args.model.exists() {
        eprintln!(
            "synthesizing {} (tiny, random weights)",
            args.model.display()
        );
        if let Some(dir) = args.model.parent() {
            std::fs::create_dir_all(dir)?;
        }
        synth::write_model(&args.model, synth::Shape::Tiny, 0)?;
    }
    let model = std::path::absolute(&args.model)?;
    let mut setups: Vec<Setup> = args
        .workers
        .iter()
        .map(|&workers| Setup {
            workers,
            lock_off: false,
        })
        .collect();
    if !args.no_baseline {
        setups.push(Setup {
            workers: TARGET_WORKERS,
            lock_off: true,
        });
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "model {} ({} KiB), {cores} cores; {JOBS} jobs x {PROMPTS_PER_JOB} prompts x {MAX_TOKENS} \
         tokens posted at once, each polled every 0.5 s; workers with default settings; \
         configurations interleaved, repetitions: {}, each run on a fresh database with fresh seeds",
        args.model.display(),
        std::fs::metadata(&model)?.len() >> 10,
        args.reps
    );

    let mut runs: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    let mut run_number = 0u32;
    for rep in 0..args.reps {
        for (setup, tokens_per_s) in setups.iter().zip(&mut runs) {
            run_number += 1;
            let measured = once(&args, &model, *setup, run_number)
                .await
                .with_context(|| format!("workers {}, repetition {}", setup.label(), rep + 1))?;
            eprintln!(
                "  workers {}, run {}: {:.1} tok/s ({} tokens in {:.2} s; the client saw the last \
                 at {:.2} s); jobs per worker {}",
                setup.label(),
                rep + 1,
                measured.tokens_per_s(),
                measured.outcome.tokens,
                measured.outcome.wall.as_secs_f64(),
                measured.outcome.client_wall.as_secs_f64(),
                measured.per_worker
            );
            tokens_per_s.push(measured.tokens_per_s());
        }
    }
    println!();
    print_table(&setups, &runs);
    Ok(())
}

struct Measured {
    outcome: client::Outcome,
    /// Jobs completed by each worker, e.g. `20/21/19`.
    per_worker: String,
}

impl Measured {
    fn tokens_per_s(&self) -> f64 {
        self.outcome.tokens as f64 / self.outcome.wall.as_secs_f64()
    }
}

/// One run: a fresh database and queue, the API and the workers, the workload, then a clean stop.
async fn once(
    args: &Args,
    model: &std::path::Path,
    setup: Setup,
    run_number: u32,
) -> anyhow::Result<Measured> {
    let database = Database::recreate(&args.services.postgres, "genq_bench_hosts").await?;
    let mut config = Config::new(
        genq_harness::default_bin_dir(),
        database.url.clone(),
        args.services.redis.clone(),
        fresh_queue("genq_bench"),
        model.to_path_buf(),
        args.logs.join(setup.slug()),
    );
    config.worker_names = (0..setup.workers).map(|i| format!("worker-{i}")).collect();
    if setup.lock_off {
        config.worker_env = vec![("GENQ_DECODE_LOCK".into(), "off".into())];
    }
    let mut cluster = Cluster::start(config).await?;
    cluster
        .wait_workers_registered(&database.pool, Duration::from_secs(60))
        .await?;

    // Seeds never repeat across runs of one invocation; with a fresh database each run, the
    // result cache has nothing to answer from either way.
    let seed = |job: usize| run_number * 10_000 + job as u32;
    // One short job per worker first, untimed: it warms the API's and PostgreSQL's paths and,
    // where the queue spreads them, the workers' own.
    let warm_up = (0..setup.workers)
        .map(|i| client::job(vec!["Hello".into()], 4, seed(JOBS + i)))
        .collect();
    let http = client::http(&cluster)?;
    client::run(&http, &cluster.base_url(), warm_up).await?;

    let jobs = (0..JOBS)
        .map(|j| {
            let prompts = (0..PROMPTS_PER_JOB)
                .map(|p| crate::workload::prompt(j * PROMPTS_PER_JOB + p))
                .collect();
            client::job(prompts, MAX_TOKENS, seed(j))
        })
        .collect();
    let outcome = client::run(&http, &cluster.base_url(), jobs).await?;
    let completed = report::completed_by_worker(&database.pool, &outcome.ids).await?;
    // Registered names are `{prefix}-{pid}-{suffix}`; a worker that completed nothing shows 0.
    let per_worker = (0..cluster.workers())
        .map(|i| {
            let prefix = format!("{}-", cluster.worker_name(i));
            let n: i64 = completed
                .iter()
                .filter(|(name, _)| name.starts_with(&prefix))
                .map(|(_, n)| n)
                .sum();
            n.to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    cluster.stop().await;
    Ok(Measured {
        outcome,
        per_worker,
    })
}

fn print_table(setups: &[Setup], runs: &[Vec<f64>]) {
    let one_worker = setups
        .iter()
        .zip(runs)
        .find(|(s, _)| s.workers == 1 && !s.lock_off)
        .map(|(_, r)| median(r.clone()));
    println!("| workers | runs (tokens/s) | median tokens/s | spread | x 1 worker |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (setup, runs) in setups.iter().zip(runs) {
        let each: Vec<String> = runs.iter().map(|t| format!("{t:.1}")).collect();
        let mid = median(runs.clone());
        let (low, high) = runs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                (lo.min(t), hi.max(t))
            });
        let ratio = match one_worker {
            Some(one) => {
                let ratio = mid / one;
                let verdict = if setup.workers == TARGET_WORKERS && !setup.lock_off {
                    let pass = if ratio >= TARGET_RATIO {
                        "PASS"
                    } else {
                        "FAIL"
                    };
                    format!(" {pass} (target >= {TARGET_RATIO:.2})")
                } else {
                    String::new()
                };
                format!("{ratio:.2}{verdict}")
            }
            None => "-".into(),
        };
        println!(
            "| {} | {} | {mid:.1} | {:.1} ({:.0} %) | {ratio} |",
            setup.label(),
            each.join(", "),
            high - low,
            100.0 * (high - low) / mid,
        );
    }
    println!();
    println!(
        "tokens/s: completion tokens of the {JOBS} jobs over the time from the first job's \
         creation to the last one's completion, as PostgreSQL recorded them; median: nearest rank; \
         spread: fastest minus slowest run (and as a share of the median)."
    );
}
