//! The per-model queues against the single queue genq had before them (any earlier build's
//! binaries, `--baseline-bin-dir`), on one host with the tiny model, so that the queue and not
//! inference dominates:
//!
//! - throughput: many short jobs in bulk through one worker with default settings, tokens/s from
//!   submission to the last answer;
//! - intake: `POST /batch` one request at a time with no worker, p50 and p99 latency (the
//!   routing a request now goes through).
//!
//! Rounds alternate the two builds; each run gets a freshly recreated database and queue.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::bail;
use genq_harness::{Cluster, Config, Database, fresh_queue};
use genq_model::synth;
use genq_shared::db;
use serde_json::{Value, json};

use crate::{Services, measure};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the single-queue build's `genq-api` and `genq-worker` are.
    #[arg(long)]
    baseline_bin_dir: PathBuf,
    /// What to call the baseline in the table (a commit, say).
    #[arg(long, default_value = "single queue")]
    baseline_name: String,
    /// GGUF model; the tiny synthesized one is written there if the file does not exist.
    #[arg(long, default_value = "models/gpt2-tiny-synthetic.gguf")]
    model: PathBuf,
    #[arg(long, default_value_t = 5000)]
    jobs: usize,
    #[arg(long, default_value_t = 8)]
    max_tokens: u32,
    /// Sequential `POST /batch` requests per intake run.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    services: Services,
    #[arg(long, default_value = ".genq/queues-bench")]
    logs: PathBuf,
}

/// One build's figures over the rounds.
#[derive(Default)]
struct Figures {
    tokens_per_s: Vec<f64>,
    intake_p50_ms: Vec<f64>,
    intake_p99_ms: Vec<f64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("$ {}", crate::command_line());
    if !args.model.exists() {
        synth::write_model(&args.model, synth::Shape::Tiny, 0)?;
    }
    let model = std::path::absolute(&args.model)?;
    println!(
        "model {}, {} cores; {} jobs x {} tokens through one worker; {} sequential POST /batch; {} rounds",
        args.model.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.jobs,
        args.max_tokens,
        args.requests,
        args.rounds
    );
    let builds = [
        (args.baseline_name.clone(), args.baseline_bin_dir.clone()),
        (
            "per-model queues".to_owned(),
            genq_harness::default_bin_dir(),
        ),
    ];
    let mut figures: [Figures; 2] = Default::default();
    for round in 0..args.rounds {
        for (index, (name, bin_dir)) in builds.iter().enumerate() {
            let tokens_per_s = throughput(&args, &model, bin_dir).await?;
            let (p50, p99) = intake(&args, &model, bin_dir).await?;
            eprintln!(
                "  round {}: {name}: {tokens_per_s:.1} tok/s, intake p50 {p50:.2} ms p99 {p99:.2} ms",
                round + 1
            );
            figures[index].tokens_per_s.push(tokens_per_s);
            figures[index].intake_p50_ms.push(p50);
            figures[index].intake_p99_ms.push(p99);
        }
    }
    let [old, new] = figures;
    let median = measure::median;
    println!();
    println!(
        "| figure (median of {} rounds) | per-model queues | {} | ratio | target |",
        args.rounds, builds[0].0
    );
    println!("| --- | ---: | ---: | ---: | --- |");
    let (new_tps, old_tps) = (median(new.tokens_per_s), median(old.tokens_per_s));
    println!(
        "| tokens/s, {} jobs x {} tokens, one worker | {new_tps:.1} | {old_tps:.1} | {:.2}x | >= 0.97x |",
        args.jobs,
        args.max_tokens,
        new_tps / old_tps
    );
    let (new_p50, old_p50) = (median(new.intake_p50_ms), median(old.intake_p50_ms));
    let (new_p99, old_p99) = (median(new.intake_p99_ms), median(old.intake_p99_ms));
    println!(
        "| POST /batch p50 ms | {new_p50:.2} | {old_p50:.2} | {:+.2} ms | - |",
        new_p50 - old_p50
    );
    println!(
        "| POST /batch p99 ms | {new_p99:.2} | {old_p99:.2} | {:+.2} ms | <= +1 ms |",
        new_p99 - old_p99
    );
    Ok(())
}

async fn start(
    args: &Args,
    model: &std::path::Path,
    bin_dir: &std::path::Path,
    workers: usize,
) -> anyhow::Result<(Cluster, Database)> {
    // Each build migrates its own: the baseline's schema is older than this build's.
    let database =
        Database::recreate_unmigrated(&args.services.postgres, "genq_bench_queues").await?;
    let mut config = Config::new(
        bin_dir.to_path_buf(),
        database.url.clone(),
        args.services.redis.clone(),
        fresh_queue("genq_bench"),
        model.to_path_buf(),
        args.logs.clone(),
    );
    config.worker_names = (0..workers).map(|i| format!("worker{i}")).collect();
    config
        .env
        .push(("GENQ_MODEL".into(), model.display().to_string()));
    let mut cluster = Cluster::start(config).await?;
    if workers > 0 {
        cluster
            .wait_workers_registered(&database.pool, Duration::from_secs(60))
            .await?;
    }
    Ok((cluster, database))
}

/// Tokens per second of `args.jobs` bulk jobs through one worker.
async fn throughput(
    args: &Args,
    model: &std::path::Path,
    bin_dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let (cluster, database) = start(args, model, bin_dir, 1).await?;
    let measured = async {
        let http = cluster.client();
        let jobs: Vec<Value> = (0..args.jobs)
            .map(|i| json!({ "prompts": [crate::workload::prompt(i)], "max_tokens": args.max_tokens, "seed": i }))
            .collect();
        let started = Instant::now();
        for chunk in jobs.chunks(10_000) {
            let response = http
                .post(format!("{}/batches", cluster.base_url()))
                .json(&json!({ "jobs": chunk }))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("POST /batches: {} {}", response.status(), response.text().await?);
            }
        }
        // SQL both schemas answer alike.
        loop {
            let unfinished: i64 = sqlx::query_scalar(
                "select count(*) from jobs where status in ('queued', 'running')",
            )
            .fetch_one(&database.pool)
            .await?;
            if unfinished == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let wall = started.elapsed();
        let tokens = db::generations::completion_tokens_total(&database.pool).await?;
        Ok(tokens as f64 / wall.as_secs_f64())
    }
    .await;
    cluster.stop().await;
    measured
}

/// p50 and p99 milliseconds of `args.requests` sequential `POST /batch`, no worker running.
async fn intake(
    args: &Args,
    model: &std::path::Path,
    bin_dir: &std::path::Path,
) -> anyhow::Result<(f64, f64)> {
    let (cluster, _database) = start(args, model, bin_dir, 0).await?;
    let measured = async {
        let http = cluster.client();
        let url = format!("{}/batch", cluster.base_url());
        let mut latencies = Vec::with_capacity(args.requests);
        for i in 0..args.requests {
            let body =
                json!({ "prompts": [crate::workload::prompt(i)], "max_tokens": args.max_tokens });
            let sent = Instant::now();
            let response = http.post(&url).json(&body).send().await?;
            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            if response.status() != 202 {
                bail!(
                    "POST /batch: {} {}",
                    response.status(),
                    response.text().await?
                );
            }
        }
        Ok((
            measure::percentile(latencies.clone(), 0.50),
            measure::percentile(latencies, 0.99),
        ))
    }
    .await;
    cluster.stop().await;
    measured
}
