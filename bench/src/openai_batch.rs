//! The OpenAI path against genq's own, on one host with the tiny model:
//!
//! - the same prompts as a 50,000-line `/v1/batches` batch and as `POST /batches` bulk jobs
//!   (the baseline: what a genq user sends today), tokens/s from submission to the last answer;
//! - uploading the 50,000-line file and its validation, in seconds;
//! - the API's resident memory above its level before, at its peak during the upload and during
//!   the download of the output file (sampled every 20 ms from /proc);
//! - one request at a time, `/v1/completions` against `POST /generate`, p50 latency, interleaved.
//!
//! Each system runs on a freshly recreated database and queue with the same seeds, so neither the
//! result cache nor the other's state is measured.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use genq_harness::{Cluster, Config, Database, fresh_queue};
use genq_model::synth;
use genq_shared::db;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::{Services, measure::median};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// GGUF model; the tiny synthesized one is written there if the file does not exist.
    #[arg(long, default_value = "models/gpt2-tiny-synthetic.gguf")]
    model: PathBuf,
    #[arg(long, default_value_t = 50_000)]
    lines: usize,
    #[arg(long, default_value_t = 64)]
    max_tokens: u32,
    /// Single requests per route for the latency comparison.
    #[arg(long, default_value_t = 30)]
    requests: usize,
    #[command(flatten)]
    services: Services,
    #[arg(long, default_value = ".genq/openai-bench")]
    logs: PathBuf,
    /// Only the /v1 batch's own figures (upload, validation, memory): no baseline, no latency.
    #[arg(long)]
    batch_only: bool,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    println!("$ {}", crate::command_line());
    if !args.model.exists() {
        synth::write_model(&args.model, synth::Shape::Tiny, 0)?;
    }
    let model = std::path::absolute(&args.model)?;
    println!(
        "model {}, {} cores; {} prompts x {} tokens; one worker with default settings",
        args.model.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        args.lines,
        args.max_tokens
    );

    if args.batch_only {
        let (cluster, database) = start(&args, &model, "v1").await?;
        let batch = batch_run(&args, &cluster, &database).await;
        cluster.stop().await;
        let batch = batch?;
        println!();
        println!("| figure | /v1 | genq's own route | ratio | target |");
        println!("| --- | ---: | ---: | ---: | --- |");
        print_files(&args, &batch);
        return Ok(());
    }
    let bulk = {
        let (cluster, database) = start(&args, &model, "bulk").await?;
        let figures = bulk_run(&args, &cluster, &database).await;
        cluster.stop().await;
        figures?
    };
    eprintln!("  POST /batches: {:.1} tok/s", bulk);
    let batch = {
        let (cluster, database) = start(&args, &model, "v1").await?;
        let figures = batch_run(&args, &cluster, &database).await;
        cluster.stop().await;
        figures?
    };
    let (generate, completions) = {
        let (cluster, _database) = start(&args, &model, "latency").await?;
        let figures = latency_run(&args, &cluster).await;
        cluster.stop().await;
        figures?
    };

    println!();
    println!("| figure | /v1 | genq's own route | ratio | target |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| tokens/s, {} prompts x {} tokens | {:.1} (`/v1/batches`) | {:.1} (`POST /batches`) | {:.2}x | >= 0.95x |",
        args.lines,
        args.max_tokens,
        batch.tokens_per_s,
        bulk,
        batch.tokens_per_s / bulk
    );
    print_files(&args, &batch);
    println!(
        "| one request at a time, 16 tokens, p50 ms | {:.1} (`/v1/completions`) | {:.1} (`POST /generate`) | {:.2}x | <= 1.1x |",
        completions,
        generate,
        completions / generate
    );
    Ok(())
}

fn print_files(args: &Args, batch: &BatchFigures) {
    println!(
        "| upload + validation of the {}-line file ({} MB), s | {:.2} + {:.2} | - | - | <= 10 s |",
        args.lines,
        batch.file_bytes / 1_000_000,
        batch.upload.as_secs_f64(),
        batch.validation.as_secs_f64()
    );
    println!(
        "| API RSS above its start: upload / download of output ({} MB), MiB | {:.1} / {:.1} | - | - | <= 100 MiB |",
        batch.output_bytes / 1_000_000,
        batch.upload_rss_mib,
        batch.download_rss_mib
    );
}

async fn start(
    args: &Args,
    model: &std::path::Path,
    slug: &str,
) -> anyhow::Result<(Cluster, Database)> {
    let database = Database::recreate(&args.services.postgres, "genq_bench_openai").await?;
    let mut config = Config::new(
        genq_harness::default_bin_dir(),
        database.url.clone(),
        args.services.redis.clone(),
        fresh_queue("genq_bench"),
        model.to_path_buf(),
        args.logs.join(slug),
    );
    config.worker_names = vec!["worker".into()];
    // The API checks every prompt against the model's context, on both paths alike.
    config
        .env
        .push(("GENQ_MODEL".into(), model.display().to_string()));
    let mut cluster = Cluster::start(config).await?;
    cluster
        .wait_workers_registered(&database.pool, Duration::from_secs(60))
        .await?;
    Ok((cluster, database))
}

fn prompt(i: usize) -> String {
    crate::workload::prompt(i)
}

async fn wait_all_final(database: &Database) -> anyhow::Result<()> {
    loop {
        let stats = db::jobs::stats(&database.pool, None).await?;
        if stats.queued + stats.running == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn tokens(database: &Database) -> anyhow::Result<i64> {
    Ok(db::generations::completion_tokens_total(&database.pool).await?)
}

/// The baseline: the prompts as bulk jobs, 10,000 a request.
async fn bulk_run(args: &Args, cluster: &Cluster, database: &Database) -> anyhow::Result<f64> {
    let http = cluster.client();
    let started = Instant::now();
    let jobs: Vec<Value> = (0..args.lines)
        .map(|i| json!({ "prompts": [prompt(i)], "max_tokens": args.max_tokens, "seed": i, "temperature": 1.0, "top_k": 0, "top_p": 1.0 }))
        .collect();
    for chunk in jobs.chunks(10_000) {
        let response = http
            .post(format!("{}/batches", cluster.base_url()))
            .json(&json!({ "jobs": chunk }))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!(
                "POST /batches: {} {}",
                response.status(),
                response.text().await?
            );
        }
    }
    wait_all_final(database).await?;
    let wall = started.elapsed();
    Ok(tokens(database).await? as f64 / wall.as_secs_f64())
}

struct BatchFigures {
    tokens_per_s: f64,
    file_bytes: usize,
    output_bytes: usize,
    upload: Duration,
    validation: Duration,
    upload_rss_mib: f64,
    download_rss_mib: f64,
}

async fn batch_run(
    args: &Args,
    cluster: &Cluster,
    database: &Database,
) -> anyhow::Result<BatchFigures> {
    let http = cluster.client();
    let base = cluster.base_url();
    let model = served_model(&http, &base).await?;
    let jsonl: String = (0..args.lines)
        .map(|i| {
            let body = json!({ "model": model, "prompt": prompt(i), "max_tokens": args.max_tokens, "seed": i });
            format!("{}\n", json!({ "custom_id": format!("r{i}"), "method": "POST", "url": "/v1/completions", "body": body }))
        })
        .collect();
    let file_bytes = jsonl.len();
    let rss = RssPeak::start(cluster.api_pid());

    let at_rest = rss.reset();
    let started = Instant::now();
    let form = Form::new().text("purpose", "batch").part(
        "file",
        Part::bytes(jsonl.into_bytes()).file_name("input.jsonl"),
    );
    let file: Value = checked(
        http.post(format!("{base}/v1/files"))
            .multipart(form)
            .send()
            .await?,
    )
    .await?;
    let upload = started.elapsed();
    let upload_rss_mib = rss.peak().saturating_sub(at_rest) as f64 / 1024.0;

    let created_at = Instant::now();
    let create = json!({ "input_file_id": file["id"], "endpoint": "/v1/completions", "completion_window": "24h" });
    let batch: Value = checked(
        http.post(format!("{base}/v1/batches"))
            .json(&create)
            .send()
            .await?,
    )
    .await?;
    let id = batch["id"].as_str().context("a batch id")?;
    let mut validation = None;
    let done = loop {
        let batch: Value =
            checked(http.get(format!("{base}/v1/batches/{id}")).send().await?).await?;
        let status = batch["status"].as_str().unwrap_or_default().to_owned();
        if validation.is_none() && status != "validating" {
            validation = Some(created_at.elapsed());
        }
        match status.as_str() {
            "completed" => break batch,
            "failed" | "expired" | "cancelled" => bail!("the batch ended {status}: {batch}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let wall = created_at.elapsed() + upload;
    let tokens_per_s = tokens(database).await? as f64 / wall.as_secs_f64();

    let at_rest = rss.reset();
    let output = done["output_file_id"].as_str().context("an output file")?;
    let response = http
        .get(format!("{base}/v1/files/{output}/content"))
        .send()
        .await?;
    let mut body = response.bytes_stream();
    let mut output_bytes = 0;
    while let Some(piece) = futures::StreamExt::next(&mut body).await {
        output_bytes += piece?.len();
    }
    let download_rss_mib = rss.peak().saturating_sub(at_rest) as f64 / 1024.0;
    Ok(BatchFigures {
        tokens_per_s,
        file_bytes,
        output_bytes,
        upload,
        validation: validation.unwrap_or_default(),
        upload_rss_mib,
        download_rss_mib,
    })
}

async fn served_model(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let models: Value = checked(http.get(format!("{base}/v1/models")).send().await?).await?;
    Ok(models["data"][0]["id"]
        .as_str()
        .context("a served model")?
        .to_owned())
}

async fn checked(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

/// p50 latency (ms) of `POST /generate` and `/v1/completions`, one request at a time, interleaved.
async fn latency_run(args: &Args, cluster: &Cluster) -> anyhow::Result<(f64, f64)> {
    let http = cluster.client();
    let base = cluster.base_url();
    let model = served_model(&http, &base).await?;
    let (mut generate, mut completions) = (Vec::new(), Vec::new());
    for i in 0..args.requests {
        // Distinct prompts and seeds: the result cache answers nothing.
        let prompt = format!("{} {i}", prompt(i));
        let seed = 1_000_000 + i;
        let started = Instant::now();
        checked(
            http.post(format!("{base}/generate"))
                .json(&json!({ "prompts": [prompt], "max_tokens": 16, "seed": seed, "temperature": 1.0, "top_k": 0, "top_p": 1.0 }))
                .send()
                .await?,
        )
        .await?;
        generate.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        checked(
            http.post(format!("{base}/v1/completions"))
                .json(&json!({ "model": model, "prompt": format!("{prompt}."), "max_tokens": 16, "seed": seed }))
                .send()
                .await?,
        )
        .await?;
        completions.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((median(generate), median(completions)))
}

/// The highest VmRSS (KiB) of a process since the last [`RssPeak::reset`], sampled every 20 ms.
struct RssPeak {
    highest: Arc<AtomicU64>,
    pid: u32,
    _sampler: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let highest = Arc::new(AtomicU64::new(0));
        let sampler = tokio::spawn({
            let highest = highest.clone();
            async move {
                loop {
                    if let Some(kib) = rss_kib(pid) {
                        highest.fetch_max(kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        RssPeak {
            highest,
            pid,
            _sampler: sampler,
        }
    }

    /// The RSS now; the peak starts over from it.
    fn reset(&self) -> u64 {
        let now = rss_kib(self.pid).unwrap_or(0);
        self.highest.store(now, Ordering::Relaxed);
        now
    }

    /// The highest RSS since the last reset.
    fn peak(&self) -> u64 {
        self.highest.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self._sampler.abort();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
